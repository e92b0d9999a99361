//! A table written once and rendered as DDL for PostgreSQL (Prisma's types, as LiteLLM's
//! own migrations produce them) or SQLite (arrays and JSON as JSON text).

use sea_orm_migration::sea_orm::DbBackend;

/// One table. `columns` holds a line per column: `name type[!] [=default]`, where `!`
/// means NOT NULL; types are text, text[], int, bigint, float, bool, timestamp and json;
/// defaults are now, false, 0, '', {} and [].
pub struct Table {
    pub name: &'static str,
    pub columns: &'static str,
    pub primary_key: &'static [&'static str],
    /// (column, referenced table, referenced column); ON DELETE follows the column's
    /// nullability as Prisma does: SET NULL when nullable, RESTRICT otherwise.
    pub foreign_keys: &'static [(&'static str, &'static str, &'static str)],
}

/// An index by its Prisma name, created only when missing.
pub struct Index {
    pub name: &'static str,
    pub table: &'static str,
    pub columns: &'static [&'static str],
    pub unique: bool,
}

struct Column<'a> {
    name: &'a str,
    kind: &'a str,
    not_null: bool,
    default: Option<&'a str>,
}

fn columns(table: &Table) -> impl Iterator<Item = Column<'_>> {
    table.columns.lines().map(str::trim).filter(|line| !line.is_empty()).map(|line| {
        let mut words = line.split_whitespace();
        let name = words.next().expect("a column line starts with its name");
        let kind = words.next().expect("a column line names its type");
        let (kind, not_null) = match kind.strip_suffix('!') {
            Some(kind) => (kind, true),
            None => (kind, false),
        };
        let default = words.next().map(|word| word.strip_prefix('=').expect("a default is written =value"));
        Column { name, kind, not_null, default }
    })
}

fn sql_type(backend: DbBackend, kind: &str) -> &'static str {
    let postgres = backend == DbBackend::Postgres;
    match (kind, postgres) {
        ("text", _) => "TEXT",
        ("text[]", true) => "TEXT[]",
        ("int", true) => "INTEGER",
        ("bigint", true) => "BIGINT",
        ("float", true) => "DOUBLE PRECISION",
        ("bool", _) => "BOOLEAN",
        ("timestamp", true) => "TIMESTAMP(3)",
        ("json", true) => "JSONB",
        ("int" | "bigint", false) => "INTEGER",
        ("float", false) => "REAL",
        ("timestamp", false) => "TIMESTAMP",
        ("text[]" | "json", false) => "TEXT",
        (other, _) => panic!("unknown column type {other}"),
    }
}

fn sql_default(backend: DbBackend, kind: &str, default: &str) -> &'static str {
    let postgres = backend == DbBackend::Postgres;
    match (default, kind, postgres) {
        ("now", ..) => "CURRENT_TIMESTAMP",
        ("false", _, true) => "false",
        ("false", _, false) => "0",
        ("0", "float", _) => "0.0",
        ("0", ..) => "0",
        ("''", ..) => "''",
        ("{}", ..) => "'{}'",
        ("[]", "text[]", true) => "ARRAY[]::TEXT[]",
        ("[]", ..) => "'[]'",
        (other, ..) => panic!("unknown default {other}"),
    }
}

/// `CREATE TABLE IF NOT EXISTS` with the table's primary and foreign keys.
pub fn create_table(backend: DbBackend, table: &Table) -> String {
    let mut lines: Vec<String> = columns(table)
        .map(|column| {
            let mut line = format!("\"{}\" {}", column.name, sql_type(backend, column.kind));
            if column.not_null {
                line.push_str(" NOT NULL");
            }
            if let Some(default) = column.default {
                line.push_str(" DEFAULT ");
                line.push_str(sql_default(backend, column.kind, default));
            }
            line
        })
        .collect();
    lines.push(format!(
        "CONSTRAINT \"{}_pkey\" PRIMARY KEY ({})",
        table.name,
        quoted_list(table.primary_key)
    ));
    for (column, target, target_column) in table.foreign_keys {
        let nullable = columns(table).any(|c| c.name == *column && !c.not_null);
        let on_delete = if nullable { "SET NULL" } else { "RESTRICT" };
        lines.push(format!(
            "CONSTRAINT \"{table}_{column}_fkey\" FOREIGN KEY (\"{column}\") REFERENCES \"{target}\"(\"{target_column}\") ON DELETE {on_delete} ON UPDATE CASCADE",
            table = table.name
        ));
    }
    format!("CREATE TABLE IF NOT EXISTS \"{}\" (\n    {}\n)", table.name, lines.join(",\n    "))
}

/// `CREATE [UNIQUE] INDEX IF NOT EXISTS`, valid on both backends.
pub fn create_index(index: &Index) -> String {
    format!(
        "CREATE {}INDEX IF NOT EXISTS \"{}\" ON \"{}\" ({})",
        if index.unique { "UNIQUE " } else { "" },
        index.name,
        index.table,
        quoted_list(index.columns)
    )
}

fn quoted_list(names: &[&str]) -> String {
    names.iter().map(|name| format!("\"{name}\"")).collect::<Vec<_>>().join(", ")
}
