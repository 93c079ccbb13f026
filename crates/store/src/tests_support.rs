//! Runs a store test on every configured backend (SQLite always, PostgreSQL with `TEST_POSTGRES_URL`).

use crate::Store;
use snikket_testkit::db::{backends, TestDb};
use std::future::Future;

pub(crate) async fn each_backend<F, Fut>(test: F)
where
    F: Fn(Store) -> Fut,
    Fut: Future<Output = ()>,
{
    for backend in backends() {
        let db = TestDb::create(backend).await;
        let store = Store::open_url(&db.url)
            .await
            .unwrap_or_else(|e| panic!("{backend:?}: {e}"));
        test(store.clone()).await;
        store.close().await;
    }
}
