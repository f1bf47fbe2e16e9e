//! The smallest database interface the store needs, so one copy of every statement and every
//! operation serves both backends:
//!
//! - the SQLite writer runs on its own thread over `rusqlite` with cached prepared statements,
//!   because a statement through sqlx's SQLite worker costs a thread hand-off (tens of
//!   microseconds) and the writer runs thousands of statements a second;
//! - PostgreSQL writes and all reads go through sqlx's `Any` driver.
//!
//! Values are the three types the schema uses (64-bit integers, text, and their NULLs), typed
//! even when NULL so that PostgreSQL knows a parameter's type.

use std::sync::Arc;

use async_trait::async_trait;
use sqlx::{Column, Row as _};
use uuid::Uuid;

/// A parameter or a cell.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(Option<i64>),
    Text(Option<String>),
    Real(Option<f64>),
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(Some(v))
    }
}

impl From<Option<i64>> for Value {
    fn from(v: Option<i64>) -> Self {
        Value::Int(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(Some(v.to_string()))
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(Some(v))
    }
}

impl From<&String> for Value {
    fn from(v: &String) -> Self {
        Value::Text(Some(v.clone()))
    }
}

impl From<Option<String>> for Value {
    fn from(v: Option<String>) -> Self {
        Value::Text(v)
    }
}

impl From<Option<&str>> for Value {
    fn from(v: Option<&str>) -> Self {
        Value::Text(v.map(str::to_string))
    }
}

impl From<Uuid> for Value {
    fn from(v: Uuid) -> Self {
        Value::Text(Some(v.to_string()))
    }
}

impl From<Option<Uuid>> for Value {
    fn from(v: Option<Uuid>) -> Self {
        Value::Text(v.map(|u| u.to_string()))
    }
}

/// `args![a, b]`: statement parameters in `$1, $2` order.
#[macro_export]
macro_rules! args {
    ($($v:expr),* $(,)?) => {
        &[$($crate::store::db::Value::from($v)),*][..]
    };
}

/// Any failure of the database layer.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(transparent)]
    Sqlx(#[from] sqlx::Error),
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error("expected a row, got none")]
    NoRow,
    #[error("rolled back with the rest of its batch")]
    RolledBack,
    #[error("column {0}: {1}")]
    Decode(String, &'static str),
}

/// What a database error means for the caller.
pub enum Fault {
    /// A uniqueness rule refused the row: the thing exists already.
    Duplicate(String),
    /// The database could not take the statement now; nothing was written.
    Busy(String),
    Other,
}

impl DbError {
    pub fn interpret(&self) -> Fault {
        use rusqlite::ErrorCode;
        match self {
            DbError::Sqlx(sqlx::Error::Database(e))
                if e.kind() == sqlx::error::ErrorKind::UniqueViolation =>
            {
                Fault::Duplicate(format!("already exists ({})", e.message()))
            }
            // PostgreSQL undid this transaction to break a deadlock (replicas' batches that
            // each hold a job row mid-batch, see `batch::run_batch`) or a serialisation
            // conflict: nothing of it was written.
            DbError::Sqlx(sqlx::Error::Database(e))
                if matches!(e.code().as_deref(), Some("40P01" | "40001")) =>
            {
                Fault::Busy(format!("{}; retry", e.message()))
            }
            DbError::Sqlx(sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed) => {
                Fault::Busy("the database has no free connection; retry".into())
            }
            DbError::Sqlite(rusqlite::Error::SqliteFailure(e, msg)) => match e.code {
                ErrorCode::ConstraintViolation
                    if matches!(
                        e.extended_code,
                        rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                            | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                    ) =>
                {
                    Fault::Duplicate(format!(
                        "already exists ({})",
                        msg.as_deref().unwrap_or("unique constraint")
                    ))
                }
                ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => {
                    Fault::Busy("the database is busy; retry".into())
                }
                _ => Fault::Other,
            },
            _ => Fault::Other,
        }
    }
}

/// One result row: cells by position, names shared by all rows of a result.
#[derive(Debug, Clone)]
pub struct Row {
    names: Arc<Vec<String>>,
    cells: Vec<Value>,
}

impl Row {
    /// The columns named `{prefix}…`, without the prefix (a row of another table returned
    /// beside this one's, such as a task's job).
    pub fn with_prefix(&self, prefix: &str) -> Row {
        let (names, cells) = self
            .names
            .iter()
            .zip(&self.cells)
            .filter_map(|(n, c)| Some((n.strip_prefix(prefix)?.to_string(), c.clone())))
            .unzip();
        Row {
            names: Arc::new(names),
            cells,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.cells.is_empty()
    }

    pub fn get<T: FromCell>(&self, name: &str) -> Result<T, DbError> {
        self.get_next(name, &mut 0)
    }

    /// [`Row::get`] for columns read in the order the statement lists them: the search starts
    /// at `next` (the column after the one read before) and moves it on, so reading a row's
    /// columns in order compares each name once instead of scanning from the first.
    pub fn get_next<T: FromCell>(&self, name: &str, next: &mut usize) -> Result<T, DbError> {
        let at = self.find_from(name, next)?;
        self.cells
            .get(at)
            .and_then(T::from_cell)
            .ok_or_else(|| DbError::Decode(name.to_string(), T::EXPECTED))
    }

    /// [`Row::get_next`] that takes the cell's text instead of copying it (the cell reads as
    /// NULL after): for a row read once, into a struct.
    pub fn take_next<T: FromCell>(&mut self, name: &str, next: &mut usize) -> Result<T, DbError> {
        let at = self.find_from(name, next)?;
        self.cells
            .get_mut(at)
            .and_then(T::take_cell)
            .ok_or_else(|| DbError::Decode(name.to_string(), T::EXPECTED))
    }

    /// The index of column `name`, searched from `next`, which it moves past the column.
    fn find_from(&self, name: &str, next: &mut usize) -> Result<usize, DbError> {
        let at = (*next..self.names.len())
            .chain(0..*next)
            .find(|&i| self.names[i] == name)
            .ok_or_else(|| DbError::Decode(name.to_string(), "no such column"))?;
        *next = at + 1;
        Ok(at)
    }

    pub fn at<T: FromCell>(&self, i: usize) -> Result<T, DbError> {
        let cell = self
            .cells
            .get(i)
            .ok_or_else(|| DbError::Decode(i.to_string(), "no such column"))?;
        T::from_cell(cell).ok_or_else(|| DbError::Decode(i.to_string(), T::EXPECTED))
    }
}

/// A Rust value read from one cell.
pub trait FromCell: Sized {
    const EXPECTED: &'static str;
    fn from_cell(v: &Value) -> Option<Self>;
    /// The value, taking what it can from the cell instead of copying it.
    fn take_cell(v: &mut Value) -> Option<Self> {
        Self::from_cell(v)
    }
}

impl FromCell for i64 {
    const EXPECTED: &'static str = "an integer";
    fn from_cell(v: &Value) -> Option<Self> {
        match v {
            Value::Int(i) => *i,
            _ => None,
        }
    }
}

impl FromCell for Option<i64> {
    const EXPECTED: &'static str = "an integer or NULL";
    fn from_cell(v: &Value) -> Option<Self> {
        match v {
            Value::Int(i) => Some(*i),
            Value::Text(None) | Value::Real(None) => Some(None),
            _ => None,
        }
    }
}

impl FromCell for String {
    const EXPECTED: &'static str = "text";
    fn from_cell(v: &Value) -> Option<Self> {
        match v {
            Value::Text(t) => t.clone(),
            _ => None,
        }
    }
    fn take_cell(v: &mut Value) -> Option<Self> {
        match v {
            Value::Text(t) => t.take(),
            _ => None,
        }
    }
}

impl FromCell for Option<String> {
    const EXPECTED: &'static str = "text or NULL";
    fn from_cell(v: &Value) -> Option<Self> {
        match v {
            Value::Text(t) => Some(t.clone()),
            Value::Int(None) | Value::Real(None) => Some(None),
            _ => None,
        }
    }
    fn take_cell(v: &mut Value) -> Option<Self> {
        match v {
            Value::Text(t) => Some(t.take()),
            Value::Int(None) | Value::Real(None) => Some(None),
            _ => None,
        }
    }
}

/// A row type read from a result row.
pub trait FromRow: Sized {
    fn from_row(row: &Row) -> Result<Self, DbError>;
    /// [`FromRow::from_row`] of a row read once: its texts are moved, not copied.
    fn from_row_owned(row: Row) -> Result<Self, DbError> {
        Self::from_row(&row)
    }
}

impl<A: FromCell> FromRow for (A,) {
    fn from_row(row: &Row) -> Result<Self, DbError> {
        Ok((row.at(0)?,))
    }
}

impl<A: FromCell, B: FromCell> FromRow for (A, B) {
    fn from_row(row: &Row) -> Result<Self, DbError> {
        Ok((row.at(0)?, row.at(1)?))
    }
}

impl<A: FromCell, B: FromCell, C: FromCell> FromRow for (A, B, C) {
    fn from_row(row: &Row) -> Result<Self, DbError> {
        Ok((row.at(0)?, row.at(1)?, row.at(2)?))
    }
}

impl<A: FromCell, B: FromCell, C: FromCell, D: FromCell> FromRow for (A, B, C, D) {
    fn from_row(row: &Row) -> Result<Self, DbError> {
        Ok((row.at(0)?, row.at(1)?, row.at(2)?, row.at(3)?))
    }
}

/// Declares a row struct and its `FromRow` by column name.
#[macro_export]
macro_rules! db_row {
    ($(#[$m:meta])* $vis:vis struct $name:ident { $($fvis:vis $field:ident : $ty:ty),* $(,)? }) => {
        $(#[$m])*
        $vis struct $name { $($fvis $field: $ty),* }
        impl $crate::store::db::FromRow for $name {
            fn from_row(row: &$crate::store::db::Row) -> Result<Self, $crate::store::db::DbError> {
                // Fields are initialised in the order written, which is the columns' order.
                let mut next = 0;
                Ok($name { $($field: row.get_next(stringify!($field), &mut next)?),* })
            }
            fn from_row_owned(
                mut row: $crate::store::db::Row,
            ) -> Result<Self, $crate::store::db::DbError> {
                let mut next = 0;
                Ok($name { $($field: row.take_next(stringify!($field), &mut next)?),* })
            }
        }
    };
}

/// Runs statements: a connection inside or outside a transaction.
#[async_trait]
pub trait Exec: Send {
    async fn fetch(&mut self, sql: &str, args: &[Value]) -> Result<Vec<Row>, DbError>;
    async fn execute(&mut self, sql: &str, args: &[Value]) -> Result<u64, DbError>;
    /// How many writing statements ran so far (where the writer needs to know).
    fn writes(&self) -> u64 {
        0
    }
    /// Whether a transaction is open (SQLite may end one itself after an I/O or full-disk
    /// error); connections that cannot tell say yes.
    fn in_transaction(&self) -> bool {
        true
    }
    /// How many statements failed so far (where a failure spoils the transaction: PostgreSQL).
    fn errors(&self) -> u64 {
        0
    }
    /// Gives back what the connection keeps only for speed (a page cache, prepared
    /// statements): the SQLite writer calls it once it has been quiet for a while.
    fn release_memory(&mut self) {}
}

/// A connection that counts its writing statements and its failed ones: PostgreSQL's, for the
/// batch runner's checks (`batch::run_batch`).
pub struct Counted<E> {
    inner: E,
    writes: u64,
    errors: u64,
}

impl<E> Counted<E> {
    pub fn new(inner: E) -> Counted<E> {
        Counted {
            inner,
            writes: 0,
            errors: 0,
        }
    }

    fn count<T>(&mut self, sql: &str, r: &Result<T, DbError>) {
        if r.is_err() {
            self.errors += 1;
        }
        if is_write(sql) {
            self.writes += 1;
        }
    }
}

/// Whether a statement may write: anything but a plain SELECT and the transaction's own
/// statements.
fn is_write(sql: &str) -> bool {
    let word = sql
        .trim_start()
        .split(|c: char| !c.is_ascii_alphabetic())
        .next()
        .unwrap_or("");
    ["INSERT", "UPDATE", "DELETE", "WITH"]
        .iter()
        .any(|w| word.eq_ignore_ascii_case(w))
}

#[async_trait]
impl<E: Exec> Exec for Counted<E> {
    async fn fetch(&mut self, sql: &str, args: &[Value]) -> Result<Vec<Row>, DbError> {
        let r = self.inner.fetch(sql, args).await;
        self.count(sql, &r);
        r
    }

    async fn execute(&mut self, sql: &str, args: &[Value]) -> Result<u64, DbError> {
        let r = self.inner.execute(sql, args).await;
        self.count(sql, &r);
        r
    }

    fn writes(&self) -> u64 {
        self.writes
    }

    fn errors(&self) -> u64 {
        self.errors
    }

    fn release_memory(&mut self) {
        self.inner.release_memory()
    }
}

/// Typed helpers over any [`Exec`].
#[async_trait]
pub trait ExecExt: Exec {
    async fn all<T: FromRow>(&mut self, sql: &str, args: &[Value]) -> Result<Vec<T>, DbError> {
        self.fetch(sql, args)
            .await?
            .into_iter()
            .map(T::from_row_owned)
            .collect()
    }

    async fn opt<T: FromRow>(&mut self, sql: &str, args: &[Value]) -> Result<Option<T>, DbError> {
        self.fetch(sql, args)
            .await?
            .into_iter()
            .next()
            .map(T::from_row_owned)
            .transpose()
    }

    async fn one<T: FromRow>(&mut self, sql: &str, args: &[Value]) -> Result<T, DbError> {
        self.opt(sql, args).await?.ok_or(DbError::NoRow)
    }
}

impl<E: Exec + ?Sized> ExecExt for E {}

/// The SQLite writer's connection: statements run synchronously on the writer's own thread.
pub struct SqliteExec {
    conn: rusqlite::Connection,
    /// Statements that changed rows so far, so the writer can tell whether a failed operation
    /// wrote anything.
    writes: u64,
    /// Each statement's shape, read once per SQL text (the writer runs the same few dozen
    /// statements thousands of times a second).
    shapes: std::collections::HashMap<String, Shape>,
}

/// What a statement's text fixes: its result's column names and, for each SQLite parameter
/// position, the number of the argument bound there.
struct Shape {
    names: Arc<Vec<String>>,
    args: Vec<usize>,
}

/// Most statement shapes kept (statements whose text varies, such as multi-row INSERTs of a
/// plan, would otherwise pile up): past it the map starts afresh.
const MOST_SHAPES: usize = 1024;

impl SqliteExec {
    pub fn new(conn: rusqlite::Connection) -> SqliteExec {
        SqliteExec {
            conn,
            writes: 0,
            shapes: std::collections::HashMap::new(),
        }
    }

    /// The statement, prepared (cached), with its arguments bound, and its column names.
    fn prepare(
        &mut self,
        sql: &str,
        args: &[Value],
    ) -> Result<(rusqlite::CachedStatement<'_>, Arc<Vec<String>>), DbError> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        // One lookup (the SQL text hashed once) on the hot path, where the shape is known.
        let shape = match self.shapes.get(sql) {
            Some(shape) => shape,
            None => {
                if self.shapes.len() >= MOST_SHAPES {
                    self.shapes.clear();
                }
                let shape = Shape {
                    names: Arc::new(stmt.column_names().iter().map(|s| s.to_string()).collect()),
                    args: argument_order(&stmt, sql)?,
                };
                self.shapes.entry(sql.to_string()).or_insert(shape)
            }
        };
        for (i, n) in shape.args.iter().enumerate() {
            let arg = args.get(n - 1).ok_or_else(|| bad_parameter(i + 1))?;
            stmt.raw_bind_parameter(i + 1, Bound(arg))?;
        }
        Ok((stmt, shape.names.clone()))
    }

    fn run(&mut self, sql: &str, args: &[Value]) -> Result<Vec<Row>, DbError> {
        let before = self.conn.total_changes();
        let (mut stmt, names) = self.prepare(sql, args)?;
        let mut rows = stmt.raw_query();
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let mut cells = Vec::with_capacity(names.len());
            for i in 0..names.len() {
                cells.push(match r.get_ref(i)? {
                    rusqlite::types::ValueRef::Null => Value::Text(None),
                    rusqlite::types::ValueRef::Integer(i) => Value::Int(Some(i)),
                    rusqlite::types::ValueRef::Real(f) => Value::Real(Some(f)),
                    rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t) => {
                        Value::Text(Some(text_of(t)))
                    }
                });
            }
            out.push(Row {
                names: names.clone(),
                cells,
            });
        }
        drop(rows);
        drop(stmt);
        self.count_write(before);
        Ok(out)
    }

    /// Counts a statement as a write when it changed rows (the connection's change count, so a
    /// `WITH … UPDATE` counts like an `UPDATE`; BEGIN, COMMIT and reads change none).
    fn count_write(&mut self, changes_before: u64) {
        if self.conn.total_changes() != changes_before {
            self.writes += 1;
        }
    }
}

/// A text cell as a `String`: checked by `str::from_utf8`, which skips ASCII a word at a time
/// (`String::from_utf8_lossy`'s chunk iterator took 0.5-2% of the writer's time under load,
/// each claim returning a task's spec and result), the lossy reading kept for invalid bytes.
fn text_of(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    }
}

fn bad_parameter(i: usize) -> DbError {
    DbError::Decode(
        format!("parameter {i}"),
        "a $N placeholder with an argument",
    )
}

/// SQLite numbers named parameters (`$2`) by first appearance, not by name: each is bound by
/// the number in its name, as sqlx does, so `$N` means the N-th argument on both backends. The
/// numbers are read from the SQL text ([`placeholders`]); SQLite's own
/// `sqlite3_bind_parameter_name` scans a list on each call, which made a multi-row INSERT of
/// thousands of parameters quadratic. It is the fallback when the text's count disagrees.
fn argument_order(stmt: &rusqlite::Statement<'_>, sql: &str) -> Result<Vec<usize>, DbError> {
    let count = stmt.parameter_count();
    let numbers = placeholders(sql);
    (1..=count)
        .map(|i| {
            match numbers.len() == count {
                true => Some(numbers[i - 1]),
                false => stmt
                    .parameter_name(i)
                    .and_then(|name| name.strip_prefix('$'))
                    .and_then(|n| n.parse::<usize>().ok()),
            }
            .filter(|n| *n >= 1)
            .ok_or_else(|| bad_parameter(i))
        })
        .collect()
}

/// The numbers of the `$N` placeholders of `sql` in order of first appearance (SQLite's
/// parameter order), outside quoted strings and identifiers.
fn placeholders(sql: &str) -> Vec<usize> {
    let bytes = sql.as_bytes();
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    let mut quote: Option<u8> = None;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match quote {
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if b == b'\'' || b == b'"' => quote = Some(b),
            None if b == b'$' => {
                let digits = bytes[i + 1..]
                    .iter()
                    .take_while(|c| c.is_ascii_digit())
                    .count();
                if let Ok(n) = sql[i + 1..i + 1 + digits].parse::<usize>() {
                    if seen.insert(n) {
                        out.push(n);
                    }
                }
                i += digits;
            }
            None => {}
        }
        i += 1;
    }
    out
}

/// An argument as SQLite binds it, borrowed (no copy of its text).
struct Bound<'a>(&'a Value);

impl rusqlite::ToSql for Bound<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match self.0 {
            Value::Int(Some(i)) => ValueRef::Integer(*i),
            Value::Text(Some(t)) => ValueRef::Text(t.as_bytes()),
            Value::Real(Some(f)) => ValueRef::Real(*f),
            _ => ValueRef::Null,
        }))
    }
}

#[async_trait]
impl Exec for SqliteExec {
    async fn fetch(&mut self, sql: &str, args: &[Value]) -> Result<Vec<Row>, DbError> {
        self.run(sql, args)
    }

    async fn execute(&mut self, sql: &str, args: &[Value]) -> Result<u64, DbError> {
        if sql.contains(';') {
            // Several statements (pragmas): not worth caching.
            self.conn.execute_batch(sql)?;
            return Ok(0);
        }
        let before = self.conn.total_changes();
        let (mut stmt, _) = self.prepare(sql, args)?;
        let n = stmt.raw_execute()? as u64;
        drop(stmt);
        self.count_write(before);
        Ok(n)
    }

    fn writes(&self) -> u64 {
        self.writes
    }

    fn in_transaction(&self) -> bool {
        !self.conn.is_autocommit()
    }

    /// The prepared statements (a set statement of 512 rows is a large program) and the page
    /// cache (up to 16 MB, `writer_connection`); the next burst prepares and reads them again.
    fn release_memory(&mut self) {
        self.conn.flush_prepared_statement_cache();
        if let Err(e) = self.conn.execute_batch("PRAGMA shrink_memory") {
            tracing::debug!(error = %e, "the writer could not shrink its page cache");
        }
    }
}

fn bind<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    args: &[Value],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    for a in args {
        q = match a.clone() {
            Value::Int(v) => q.bind(v),
            Value::Text(v) => q.bind(v),
            Value::Real(v) => q.bind(v),
        };
    }
    q
}

/// A row of the read pool as [`Row`]: each cell taken as its value's own kind says (trying
/// one type after another built a decode error for every text cell, a quarter of a read's
/// cost). A NULL is `Int(None)`, as [`Row::get`] takes it for any optional type.
fn from_any(row: &sqlx::any::AnyRow, names: &Arc<Vec<String>>) -> Result<Row, DbError> {
    use sqlx::any::AnyTypeInfoKind as Kind;
    use sqlx::ValueRef as _;
    let mut cells = Vec::with_capacity(names.len());
    for i in 0..names.len() {
        let raw = row.try_get_raw(i)?;
        let cell = match raw.type_info().kind {
            _ if raw.is_null() => Value::Int(None),
            Kind::SmallInt | Kind::Integer | Kind::BigInt => Value::Int(row.try_get(i)?),
            Kind::Text => Value::Text(row.try_get(i)?),
            Kind::Real | Kind::Double => Value::Real(row.try_get(i)?),
            Kind::Null | Kind::Bool | Kind::Blob => {
                return Err(DbError::Decode(names[i].clone(), "a supported type"))
            }
        };
        cells.push(cell);
    }
    Ok(Row {
        names: names.clone(),
        cells,
    })
}

#[async_trait]
impl Exec for sqlx::AnyConnection {
    /// Without arguments the text may hold several statements, sent in one round trip (the
    /// simple protocol, not prepared); their rows come back in order, each with its own columns.
    async fn fetch(&mut self, sql: &str, args: &[Value]) -> Result<Vec<Row>, DbError> {
        let rows = if args.is_empty() && sql.contains(';') {
            sqlx::Executor::fetch_all(&mut *self, sql).await?
        } else {
            bind(sqlx::query(sql), args).fetch_all(&mut *self).await?
        };
        // The column names, shared by the rows of one statement.
        let mut names: Option<Arc<Vec<String>>> = None;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let same = names.as_ref().is_some_and(|n| {
                n.len() == r.columns().len()
                    && n.iter().zip(r.columns()).all(|(a, c)| a == c.name())
            });
            if !same {
                names = None;
            }
            let n = names.get_or_insert_with(|| {
                Arc::new(r.columns().iter().map(|c| c.name().to_string()).collect())
            });
            out.push(from_any(r, n)?);
        }
        Ok(out)
    }

    async fn execute(&mut self, sql: &str, args: &[Value]) -> Result<u64, DbError> {
        if args.is_empty() {
            let r = sqlx::Executor::execute(&mut *self, sql).await?;
            return Ok(r.rows_affected());
        }
        Ok(bind(sqlx::query(sql), args)
            .execute(&mut *self)
            .await?
            .rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::db_row! {
        struct Pair { id: String, n: Option<i64> }
    }

    /// The placeholder numbers read from the text are SQLite's own parameter order.
    #[test]
    fn placeholders_follow_sqlites_parameter_order() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (a TEXT, b TEXT, c TEXT)")
            .unwrap();
        let many: Vec<String> = (0..300)
            .map(|i| format!("(${}, '$9', ${})", 2 * i + 2, 2 * i + 1))
            .collect();
        for sql in [
            "SELECT $1".to_string(),
            "SELECT $2, $1, $2, '$7', \"$8\"".to_string(),
            "SELECT a FROM t WHERE a = $3 AND (b = $1 OR $3 IS NULL) AND c = $2".to_string(),
            format!("INSERT INTO t (a, b, c) VALUES {}", many.join(", ")),
        ] {
            let stmt = conn.prepare(&sql).unwrap();
            let sqlite: Vec<usize> = (1..=stmt.parameter_count())
                .map(|i| stmt.parameter_name(i).unwrap()[1..].parse().unwrap())
                .collect();
            assert_eq!(placeholders(&sql), sqlite, "{sql}");
        }
    }

    #[tokio::test]
    async fn sqlite_exec_round_trips_values() {
        let mut db = SqliteExec::new(rusqlite::Connection::open_in_memory().unwrap());
        db.execute("CREATE TABLE t (id TEXT PRIMARY KEY, n BIGINT)", &[])
            .await
            .unwrap();
        db.execute(
            "INSERT INTO t (id, n) VALUES ($1, $2)",
            args!["a", Some(5i64)],
        )
        .await
        .unwrap();
        db.execute(
            "INSERT INTO t (id, n) VALUES ($1, $2)",
            args!["b", None::<i64>],
        )
        .await
        .unwrap();
        let rows: Vec<Pair> = db
            .all("SELECT id, n FROM t ORDER BY id", &[])
            .await
            .unwrap();
        assert_eq!((rows[0].id.as_str(), rows[0].n), ("a", Some(5)));
        assert_eq!((rows[1].id.as_str(), rows[1].n), ("b", None));
        let (count,): (i64,) = db
            .one("SELECT COUNT(*) FROM t WHERE id <> $1", args!["a"])
            .await
            .unwrap();
        assert_eq!(count, 1);
        // Placeholders bind by their number, whatever order they appear in.
        db.execute("UPDATE t SET n = $2 WHERE id = $1", args!["b", 9i64])
            .await
            .unwrap();
        let (n,): (i64,) = db
            .one("SELECT n FROM t WHERE id = $1", args!["b"])
            .await
            .unwrap();
        assert_eq!(n, 9);
        let none: Option<Pair> = db
            .opt("SELECT id, n FROM t WHERE id = $1", args!["z"])
            .await
            .unwrap();
        assert!(none.is_none());
        // Only statements that change rows count as writes (a refused operation may try one).
        let writes = db.writes();
        db.execute("UPDATE t SET n = 1 WHERE id = $1", args!["nobody"])
            .await
            .unwrap();
        let none: Vec<Pair> = db
            .all(
                "UPDATE t SET n = 1 WHERE id = $1 RETURNING id, n",
                args!["nobody"],
            )
            .await
            .unwrap();
        assert!(none.is_empty());
        assert_eq!(db.writes(), writes);
        let one: Vec<Pair> = db
            .all(
                "UPDATE t SET n = 1 WHERE id = $1 RETURNING id, n",
                args!["a"],
            )
            .await
            .unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(db.writes(), writes + 1);
        let bad = db
            .one::<(String,)>("SELECT n FROM t WHERE id = $1", args!["a"])
            .await;
        assert!(matches!(bad, Err(DbError::Decode(_, _))));
    }
}
