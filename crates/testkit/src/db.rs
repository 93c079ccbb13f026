//! Database selection for tests: SQLite always, PostgreSQL when `TEST_POSTGRES_URL` is set.

use sqlx::Connection;

/// Which backend a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file in a temp dir.
    Sqlite,
    /// A fresh database on the server named by `TEST_POSTGRES_URL`.
    Postgres,
}

/// The backends to run store tests on: SQLite, plus PostgreSQL when configured.
pub fn backends() -> Vec<Backend> {
    let mut v = vec![Backend::Sqlite];
    if postgres_url().is_some() {
        v.push(Backend::Postgres);
    }
    v
}

fn postgres_url() -> Option<String> {
    std::env::var("TEST_POSTGRES_URL")
        .ok()
        .filter(|s| !s.is_empty())
}

/// A database that exists for one test.
pub struct TestDb {
    /// The backend.
    pub backend: Backend,
    /// Connection URL (`sqlite://…` or `postgres://…`).
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    /// Creates an empty database on `backend`.
    pub async fn create(backend: Backend) -> TestDb {
        match backend {
            Backend::Sqlite => {
                let dir = crate::temp_dir();
                let path = dir.path().join("test.sqlite");
                TestDb {
                    backend,
                    url: format!("sqlite://{}", path.display()),
                    _dir: Some(dir),
                }
            }
            Backend::Postgres => {
                let base = postgres_url().expect("TEST_POSTGRES_URL");
                let name = format!("t_{:016x}", rand::random::<u64>());
                let mut conn = sqlx::PgConnection::connect(&base)
                    .await
                    .expect("connect to TEST_POSTGRES_URL");
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut conn)
                    .await
                    .expect("create database");
                let url = match base.rfind('/') {
                    Some(i) if base[..i].ends_with('/') => format!("{base}/{name}"),
                    Some(i) => format!("{}/{name}", &base[..i]),
                    None => format!("{base}/{name}"),
                };
                TestDb {
                    backend,
                    url,
                    _dir: None,
                }
            }
        }
    }
}
