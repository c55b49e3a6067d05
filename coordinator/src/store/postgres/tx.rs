//! A transaction on a connection: its writes gathered and pipelined with the
//! commit, and the store's values and rows as PostgreSQL's.

use super::*;

/// A transaction on a [`PgConn`]: its writes wait in `pending` and go in one
/// pipeline before the next query or the commit; dropped uncommitted, it is rolled
/// back.
pub struct PgTx<'a> {
    pub(super) conn: &'a mut PgConn,
    pub(super) gathered: batch::Gathered,
    /// Writes queued whose answers are not read yet, in order.
    pub(super) in_flight: Vec<InFlight>,
    pub(super) open: bool,
    pub(super) read_only: bool,
}

impl PgTx<'_> {
    /// Queues what was gathered, encoded, in order, for the session's worker to
    /// send; the answers are read at [`PgTx::flush`].
    /// (Sending parts while the transaction is still being made was measured: the
    /// extra statements cost the server more than the overlap saved.)
    fn send(&mut self) -> std::result::Result<(), StoreError> {
        let sending = self.resolve()?;
        for (statement, params) in sending {
            // A write that cannot be encoded is not sent, nor anything after it
            // (the COMMIT least of all): the transaction is rolled back.
            let write = self.conn.queue(|client| async move {
                let params: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
                client.execute(&statement, &params).await.map(drop)
            })?;
            self.in_flight.push(write);
        }
        Ok(())
    }

    /// Sends what is left, then reads every answer in order; the first failure
    /// is the transaction's.
    fn flush(&mut self) -> std::result::Result<(), StoreError> {
        self.send()?;
        let in_flight = std::mem::take(&mut self.in_flight);
        read_answers(&self.conn.rt, in_flight).map_err(|e| {
            self.conn.forget_if_lost(&e);
            sort(&e)
        })
    }

    /// Sends the transaction whole, its count in `corral_writer` and its `COMMIT`
    /// included, and returns before the answer: [`PgConn::settle`] reads it. The
    /// writer makes its next transaction meanwhile, which commits only if this
    /// one did.
    fn send_commit(&mut self) -> Result<()> {
        let next = self.conn.commits + 1;
        let Role::Writer { epoch } = self.conn.role else {
            return Err(StoreError::Unavailable("PostgreSQL: only the leader's writer commits changes".into()).into());
        };
        Sql::execute(
            self,
            "SELECT corral_count_commit(?1, ?2)",
            vec![Value::Int(next as i64), Value::Int(epoch as i64)],
        )?;
        self.send()?;
        let commit = self.conn.queue(|client| async move { client.batch_execute("COMMIT").await })?;
        let mut answers = std::mem::take(&mut self.in_flight);
        answers.push(commit);
        self.open = false;
        self.conn.pending.push_back(Pending { answers, count: next });
        self.conn.commits = next;
        Ok(())
    }
}

/// Reads answers in order (each was queued when it was made); the first failure
/// is returned, after every answer was read.
pub(super) fn read_answers(rt: &tokio::runtime::Runtime, answers: Vec<InFlight>) -> PgResult<()> {
    block(rt, async move {
        let mut first_error = None;
        for mut answer in answers {
            answer.as_mut().await;
            if let Some(Err(e)) = answer.as_mut().take_output() {
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    })
}

impl PgTx<'_> {
    /// The statements (prepared) and parameters of what was gathered.
    fn resolve(&mut self) -> std::result::Result<Vec<(Statement, Vec<Param>)>, StoreError> {
        let unwrap = |e: crate::error::Error| match e {
            crate::error::Error::Store(e) => e,
            other => StoreError::Unavailable(other.to_string()),
        };
        let items = self.gathered.take();
        let mut sending = Vec::with_capacity(items.len());
        for item in items {
            match item {
                batch::Item::One { sql, args } => {
                    sending
                        .push((self.conn.statement(&sql).map_err(unwrap)?, args.into_iter().map(Param::One).collect()));
                }
                batch::Item::Rows { sql, shape, rows, .. } => {
                    let types = match rows.len() {
                        1 => None,
                        _ => self.conn.types_of(&shape).map_err(unwrap)?,
                    };
                    let Some(types) = types else {
                        let statement = self.conn.statement(&sql).map_err(unwrap)?;
                        for row in rows {
                            sending.push((statement.clone(), row.into_iter().map(Param::One).collect()));
                        }
                        continue;
                    };
                    let statement = self.conn.statement(&batch::gathered_sql(&shape, &types)).map_err(unwrap)?;
                    let mut columns: Vec<Vec<Value<'static>>> =
                        vec![Vec::with_capacity(rows.len()); shape.columns.len()];
                    for row in rows {
                        for (column, value) in columns.iter_mut().zip(row) {
                            column.push(value);
                        }
                    }
                    sending.push((statement, columns.into_iter().map(Param::Column).collect()));
                }
            }
        }
        Ok(sending)
    }
}

/// A parameter: one value, or a column of gathered rows (an array).
#[derive(Debug)]
pub(super) enum Param {
    One(Value<'static>),
    Column(Vec<Value<'static>>),
}

impl ToSql for Param {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        let values = match self {
            Param::One(v) => return v.to_sql(ty, out),
            Param::Column(values) => values,
        };
        let wrong = |v: &Value| format!("cannot put {v:?} in a column of {ty}");
        match *ty {
            Type::INT8_ARRAY => values
                .iter()
                .map(|v| match v {
                    Value::Null => Ok(None),
                    Value::Int(i) => Ok(Some(*i)),
                    other => Err(wrong(other)),
                })
                .collect::<std::result::Result<Vec<Option<i64>>, String>>()?
                .to_sql(ty, out),
            Type::TEXT_ARRAY => values
                .iter()
                .map(|v| match v {
                    Value::Null => Ok(None),
                    Value::Text(s) => Ok(Some(s.as_ref())),
                    other => Err(wrong(other)),
                })
                .collect::<std::result::Result<Vec<Option<&str>>, String>>()?
                .to_sql(ty, out),
            Type::BYTEA_ARRAY => values
                .iter()
                .map(|v| match v {
                    Value::Null => Ok(None),
                    Value::Blob(b) => Ok(Some(b.as_ref())),
                    Value::Text(s) => Ok(Some(s.as_bytes())),
                    other => Err(wrong(other)),
                })
                .collect::<std::result::Result<Vec<Option<&[u8]>>, String>>()?
                .to_sql(ty, out),
            Type::FLOAT8_ARRAY => values
                .iter()
                .map(|v| match v {
                    Value::Null => Ok(None),
                    Value::Real(f) => Ok(Some(*f)),
                    Value::Int(i) => Ok(Some(*i as f64)),
                    other => Err(wrong(other)),
                })
                .collect::<std::result::Result<Vec<Option<f64>>, String>>()?
                .to_sql(ty, out),
            _ => Err(format!("no gathered column of type {ty}").into()),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    tokio_postgres::types::to_sql_checked!();
}

impl Sql for PgTx<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn execute(&mut self, sql: &str, args: Vec<Value<'_>>) -> Result<()> {
        refuse_unstorable(&args)?;
        let shape = self.conn.shape(sql);
        self.gathered.push(sql, &shape, args.into_iter().map(Value::into_owned).collect());
        Ok(())
    }

    fn query_each(&mut self, sql: &str, args: &[Value<'_>], each: &mut dyn FnMut(&Row) -> Result<()>) -> Result<()> {
        self.flush()?;
        self.conn.query_now(sql, args, each)
    }
}

impl Tx for PgTx<'_> {
    fn commit(mut self: Box<Self>) -> Result<()> {
        if self.read_only {
            let commit = self.conn.queue(|client| async move { client.batch_execute("COMMIT").await })?;
            self.in_flight.push(commit);
            self.flush()?;
            self.open = false;
            return Ok(());
        }
        self.send_commit()?;
        while !self.conn.pending.is_empty() {
            self.conn.settle()?;
        }
        Ok(())
    }

    fn commit_later(mut self: Box<Self>) -> Result<()> {
        match self.read_only {
            true => self.commit(),
            false => self.send_commit(),
        }
    }

    fn sql(&mut self) -> &mut dyn Sql {
        self
    }
}

impl Drop for PgTx<'_> {
    fn drop(&mut self) {
        if !self.open {
            return;
        }
        self.gathered.take();
        self.in_flight.clear();
        if let Some(client) = self.conn.client.as_ref() {
            if block(&self.conn.rt, client.batch_execute("ROLLBACK")).is_err() {
                self.conn.client = None;
            }
        }
    }
}

/// `?N` placeholders (the store's, which SQLite reads) as PostgreSQL's `$N`.
pub(super) fn placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '?' && chars.peek().is_some_and(|d| d.is_ascii_digit()) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

impl ToSql for Value<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(v) => match *ty {
                Type::INT8 => v.to_sql(ty, out),
                Type::INT4 => i32::try_from(*v)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*v)?.to_sql(ty, out),
                Type::BOOL => (*v != 0).to_sql(ty, out),
                Type::FLOAT8 => (*v as f64).to_sql(ty, out),
                _ => v.to_string().to_sql(ty, out),
            },
            Value::Real(v) => v.to_sql(ty, out),
            Value::Text(s) => s.as_ref().to_sql(ty, out),
            Value::Blob(b) => b.as_ref().to_sql(ty, out),
            Value::Unstorable(why) => Err(why.clone().into()),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    tokio_postgres::types::to_sql_checked!();
}

/// A row of PostgreSQL's as the store's [`Row`].
pub(super) fn row_of(row: &tokio_postgres::Row) -> Result<Row> {
    let mut values = Vec::with_capacity(row.len());
    for (i, column) in row.columns().iter().enumerate() {
        let bad = |e: tokio_postgres::Error| super::super::corrupt(format!("column {}: {e}", column.name()));
        let value = match *column.type_() {
            Type::INT8 => row.try_get::<_, Option<i64>>(i).map_err(bad)?.map(Value::Int),
            Type::INT4 => row.try_get::<_, Option<i32>>(i).map_err(bad)?.map(|v| Value::Int(v.into())),
            Type::INT2 => row.try_get::<_, Option<i16>>(i).map_err(bad)?.map(|v| Value::Int(v.into())),
            Type::BOOL => row.try_get::<_, Option<bool>>(i).map_err(bad)?.map(|v| Value::Int(v.into())),
            Type::FLOAT8 => row.try_get::<_, Option<f64>>(i).map_err(bad)?.map(Value::Real),
            Type::BYTEA => row.try_get::<_, Option<Vec<u8>>>(i).map_err(bad)?.map(|b| Value::Blob(b.into())),
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => {
                row.try_get::<_, Option<String>>(i).map_err(bad)?.map(|s| Value::Text(s.into()))
            }
            ref other => return Err(super::super::corrupt(format!("column {} has type {other}", column.name()))),
        };
        values.push(value.unwrap_or(Value::Null));
    }
    Ok(Row { values })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_dollars() {
        assert_eq!(
            placeholders("SELECT a FROM t WHERE b = ?1 AND c = ?12"),
            "SELECT a FROM t WHERE b = $1 AND c = $12"
        );
    }
}
