//! `corral-rsh HOST CMD...`: a multi-node task's remote shell.
//!
//! OpenMPI (`plm_rsh_agent`) and MPICH's Hydra (`-launcher-exec`) call it as they
//! would call `ssh`. It asks its own agent, over the agent's launch socket
//! (`CORRAL_LAUNCH_SOCKET`, with the attempt's secret from `CORRAL_LAUNCH_TOKEN`,
//! never from the command line), to run CMD (its words joined by spaces, run by
//! `sh -c`) on HOST, one of the attempt's nodes; relays its stdin there and its
//! stdout and stderr back; and exits with its exit code (255 if it could not be
//! started, as ssh does). With `--own-output` first, CMD's output stays on HOST
//! as that rank's own (the coordination command's).
//!
//! Between this process and its agent, each message is a frame: a kind byte, a
//! big-endian u32 length, and that many bytes ([`write_frame`], [`read_frame`]).

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

/// The frames' kinds.
pub mod kind {
    /// To the agent, first: the secret, the host and the command, each a frame of
    /// its own after this one (`HELLO` carries nothing, or [`super::OWN_OUTPUT`]).
    pub const HELLO: u8 = 1;
    pub const STDIN: u8 = 2;
    pub const STDIN_EOF: u8 = 3;
    /// From the agent.
    pub const STDOUT: u8 = 4;
    pub const STDERR: u8 = 5;
    /// The exit code, as a big-endian i32.
    pub const EXIT: u8 = 6;
    /// Why it could not run (then the launcher exits 255).
    pub const ERROR: u8 = 7;
    /// A string of the hello.
    pub const TEXT: u8 = 8;
}

/// The largest frame either side accepts.
pub const MAX_FRAME: usize = 1 << 20;

/// The environment variables that reach the launcher.
pub const SOCKET_VAR: &str = "CORRAL_LAUNCH_SOCKET";
pub const TOKEN_VAR: &str = "CORRAL_LAUNCH_TOKEN";

/// The launcher's name: the agent's binary answers to it (a link in its work dir).
pub const NAME: &str = "corral-rsh";

/// `corral-rsh --own-output HOST CMD`: CMD's stdout and stderr are the output of
/// HOST's rank (kept there, readable per rank), not relayed back; only its exit
/// is. The coordination command runs so.
pub const OWN_OUTPUT: &str = "--own-output";

pub fn write_frame(w: &mut impl Write, kind: u8, data: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(data.len()).map_err(|_| std::io::Error::other("frame too large"))?;
    let mut head = [0u8; 5];
    head[0] = kind;
    head[1..].copy_from_slice(&len.to_be_bytes());
    w.write_all(&head)?;
    w.write_all(data)
}

/// Reads one frame; `None` at a clean end of the stream.
pub fn read_frame(r: &mut impl Read) -> std::io::Result<Option<(u8, Vec<u8>)>> {
    let mut head = [0u8; 5];
    match r.read_exact(&mut head) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let (kind, len) = frame_head(&head)?;
    let mut data = vec![0; len];
    r.read_exact(&mut data)?;
    Ok(Some((kind, data)))
}

/// A frame's kind and length from its five-byte head, refusing one over [`MAX_FRAME`].
pub fn frame_head(head: &[u8; 5]) -> std::io::Result<(u8, usize)> {
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::other(format!("a frame of {len} bytes is more than {MAX_FRAME}")));
    }
    Ok((head[0], len))
}

/// The host and command from ssh-style arguments: options before the host are
/// skipped (`-x`, `-T`, `-n`, `-q`; `-l USER`, `-p PORT`, `-o OPT`, `-i FILE` with
/// theirs), the rest joined with spaces.
pub fn host_and_command(args: &[String]) -> Result<(String, String), String> {
    let mut rest = args.iter();
    let host = loop {
        match rest.next().map(String::as_str) {
            Some("-l" | "-p" | "-o" | "-i" | "-F" | "-E") => {
                rest.next();
            }
            Some(flag) if flag.starts_with('-') => {}
            Some(host) => break host.to_string(),
            None => return Err(format!("usage: {NAME} HOST COMMAND...")),
        }
    };
    let command: Vec<&str> = rest.map(String::as_str).collect();
    if command.is_empty() {
        return Err(format!("usage: {NAME} HOST COMMAND... (no command for {host})"));
    }
    Ok((host, command.join(" ")))
}

/// When this process was started by the launcher's name: runs it, and returns
/// the exit status for `main` to return.
pub fn as_launcher() -> Option<std::process::ExitCode> {
    let mut args = std::env::args_os();
    let name = args.next()?;
    let called = std::path::Path::new(&name).file_name().is_some_and(|n| n == NAME);
    called.then(|| std::process::ExitCode::from(main(args.collect()).clamp(0, 255) as u8))
}

/// Runs the launcher with the arguments after its name; returns its exit code.
pub fn main(args: Vec<OsString>) -> i32 {
    let args: Vec<String> = args.into_iter().map(|a| a.to_string_lossy().into_owned()).collect();
    let own_output = match args.first().map(String::as_str) {
        Some(crate::gang::HOLD) => crate::gang::hold(),
        Some(OWN_OUTPUT) => true,
        _ => false,
    };
    match run(&args[own_output as usize..], own_output) {
        Ok(code) => code,
        Err(why) => {
            eprintln!("{NAME}: {why}");
            255
        }
    }
}

fn run(args: &[String], own_output: bool) -> Result<i32, String> {
    let (host, command) = host_and_command(args)?;
    let socket = std::env::var(SOCKET_VAR)
        .map_err(|_| format!("{SOCKET_VAR} is not set: {NAME} runs only inside a multi-node task"))?;
    let token = std::env::var(TOKEN_VAR).map_err(|_| format!("{TOKEN_VAR} is not set"))?;
    let mut stream = UnixStream::connect(&socket).map_err(|e| format!("cannot reach the agent at {socket}: {e}"))?;
    let mut hello = || -> std::io::Result<()> {
        let flags = if own_output { OWN_OUTPUT.as_bytes() } else { &[] };
        write_frame(&mut stream, kind::HELLO, flags)?;
        for text in [&token, &host, &command] {
            write_frame(&mut stream, kind::TEXT, text.as_bytes())?;
        }
        Ok(())
    };
    hello().map_err(|e| format!("cannot talk to the agent: {e}"))?;
    // Stdin goes there from a thread of its own; what comes back is written here.
    let mut to_agent = stream.try_clone().map_err(|e| e.to_string())?;
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0; 64 << 10];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = write_frame(&mut to_agent, kind::STDIN_EOF, &[]);
                    return;
                }
                Ok(n) => {
                    if write_frame(&mut to_agent, kind::STDIN, &buf[..n]).is_err() {
                        return;
                    }
                }
            }
        }
    });
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    loop {
        match read_frame(&mut stream).map_err(|e| format!("the agent's connection broke: {e}"))? {
            Some((kind::STDOUT, data)) => {
                let _ = out.write_all(&data).and_then(|_| out.flush());
            }
            Some((kind::STDERR, data)) => {
                let _ = err.write_all(&data).and_then(|_| err.flush());
            }
            Some((kind::EXIT, data)) => {
                let code = data.get(..4).map_or(255, |b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]));
                return Ok(code);
            }
            Some((kind::ERROR, data)) => return Err(String::from_utf8_lossy(&data).into_owned()),
            Some(_) => {}
            None => return Err("the agent closed the connection before the command ended".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(w: &[&str]) -> Vec<String> {
        w.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn ssh_style_arguments_give_the_host_and_the_joined_command() {
        assert_eq!(
            host_and_command(&words(&["n-2", " orted", "-mca", "ess", "\"env\""])),
            Ok(("n-2".into(), " orted -mca ess \"env\"".into()))
        );
        assert_eq!(
            host_and_command(&words(&["-x", "-l", "me", "n-3", "hostname"])),
            Ok(("n-3".into(), "hostname".into()))
        );
        assert!(host_and_command(&words(&["n-2"])).unwrap_err().contains("no command"));
        assert!(host_and_command(&words(&["-x"])).unwrap_err().starts_with("usage"));
    }

    #[test]
    fn frames_read_back_and_a_huge_one_is_refused() {
        let mut buf = Vec::new();
        write_frame(&mut buf, kind::STDOUT, b"hello").unwrap();
        write_frame(&mut buf, kind::EXIT, &3i32.to_be_bytes()).unwrap();
        let mut r = std::io::Cursor::new(buf);
        assert_eq!(read_frame(&mut r).unwrap(), Some((kind::STDOUT, b"hello".to_vec())));
        assert_eq!(read_frame(&mut r).unwrap(), Some((kind::EXIT, 3i32.to_be_bytes().to_vec())));
        assert_eq!(read_frame(&mut r).unwrap(), None);
        let mut huge = vec![kind::STDIN];
        huge.extend_from_slice(&(u32::MAX).to_be_bytes());
        assert!(read_frame(&mut std::io::Cursor::new(huge)).is_err());
    }
}
