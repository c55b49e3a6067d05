//! Every gRPC method the protos declare, as `/package.Service/Method` paths, read
//! from the encoded descriptor set: what the coordinator's role table and the role
//! tests are checked against, so a new method cannot be forgotten in either.

use prost::Message;

#[derive(Clone, PartialEq, Message)]
struct FileDescriptorSet {
    #[prost(message, repeated, tag = "1")]
    file: Vec<FileDescriptor>,
}

#[derive(Clone, PartialEq, Message)]
struct FileDescriptor {
    #[prost(string, optional, tag = "2")]
    package: Option<String>,
    #[prost(message, repeated, tag = "6")]
    service: Vec<ServiceDescriptor>,
}

#[derive(Clone, PartialEq, Message)]
struct ServiceDescriptor {
    #[prost(string, optional, tag = "1")]
    name: Option<String>,
    #[prost(message, repeated, tag = "2")]
    method: Vec<MethodDescriptor>,
}

#[derive(Clone, PartialEq, Message)]
struct MethodDescriptor {
    #[prost(string, optional, tag = "1")]
    name: Option<String>,
}

/// The paths of every method of `corral.v1`.
pub fn all() -> Vec<String> {
    // The set is generated at build time from our own protos, so it always decodes.
    let set = FileDescriptorSet::decode(crate::v1::FILE_DESCRIPTOR_SET).unwrap_or_default();
    let mut out = Vec::new();
    for file in set.file {
        let package = file.package.unwrap_or_default();
        for service in file.service {
            let service_name = service.name.unwrap_or_default();
            for method in service.method {
                out.push(format!("/{package}.{service_name}/{}", method.name.unwrap_or_default()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_services_methods_are_listed() {
        let all = super::all();
        assert!(all.contains(&"/corral.v1.Corral/SubmitJob".to_string()), "{all:?}");
        assert!(all.contains(&"/corral.v1.Agent/Session".to_string()), "{all:?}");
        assert!(all.contains(&"/corral.v1.Objects/Put".to_string()), "{all:?}");
    }
}
