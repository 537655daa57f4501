//! `dashboard-reads`: a page of stock levels with products and stores, beside the same SQL and
//! JSON done raw; and the SQL statements one request costs.

use super::*;

const DASHBOARD: &str = "query Dashboard { stockLevels(first: 100) { edges { node { quantity \
    reserved available product { sku name } store { name } } } } }";

/// Checks that the server answers the page without errors, prints its size beside the
/// baseline's, and warms connections and caches up.
async fn warm_up(gql: &Gql, clients: usize, base_len: usize) -> BenchResult<()> {
    let sample = gql.run_raw(DASHBOARD, json!({})).await?;
    if has_errors(&sample) {
        return Err(format!(
            "dashboard query failed: {}",
            String::from_utf8_lossy(&sample)
        ));
    }
    eprintln!(
        "  response bytes: server {} / baseline {base_len}",
        sample.len()
    );
    read_run(gql, clients, Duration::from_millis(500)).await;
    Ok(())
}

/// `clients` workers requesting the dashboard page for `duration`.
async fn read_run(gql: &Gql, clients: usize, duration: Duration) -> RunStats {
    let gql = gql.clone();
    load::run_async(clients, duration, move |_, _| {
        let gql = gql.clone();
        async move {
            let body = gql.run_raw(DASHBOARD, json!({})).await?;
            if has_errors(&body) {
                return Err(String::from_utf8_lossy(&body).into_owned());
            }
            Ok(())
        }
    })
    .await
}

/// `dashboard-reads`, plus the SQL statement count of one request.
pub async fn dashboard(ctx: &Context) -> BenchResult<Vec<Row>> {
    if let Some(url) = &ctx.postgres {
        return dashboard_on_postgres(ctx, url).await;
    }
    let name = "dashboard-reads";
    eprintln!(
        "{name}: {} clients, baseline {} thread(s), {} runs × {:?}",
        ctx.read_clients, ctx.baseline_threads, ctx.runs, ctx.duration
    );
    let (server, _) = ctx
        .server("dashboard-server", ctx.products, ctx.stores)
        .await?;
    ctx.seeded("dashboard-baseline", ctx.products, ctx.stores)
        .await?;
    let base_path = ctx.db("dashboard-baseline");
    let gql = server.client(ctx.read_clients)?;
    let base_len = baseline::dashboard_body_len(&base_path, 100)?;
    warm_up(&gql, ctx.read_clients, base_len).await?;
    let read = |duration: Duration| read_run(&gql, ctx.read_clients, duration);
    let (server_runs, baseline_runs) = alternate(
        ctx.runs,
        "req/s",
        async || read(ctx.duration).await,
        async || {
            let (path, threads, duration) = (base_path.clone(), ctx.baseline_threads, ctx.duration);
            tokio::task::spawn_blocking(move || {
                baseline::dashboard_loop(&path, threads, 100, duration)
            })
            .await
            .map_err(|e| e.to_string())?
        },
    )
    .await?;
    server.stop().await;
    let mut rows = rows_of(name, "req/s", &server_runs, &baseline_runs, true);
    if ctx.external.is_none() {
        let count = sql_count(ctx, &ctx.db("dashboard-server")).await?;
        eprintln!("  SQL statements for one dashboard request: {count}");
        rows.push(Row::figure(
            name,
            "sql statements",
            "per request",
            count as f64,
        ));
    }
    Ok(rows)
}

/// Starts a server with SQL logging on `db`, sends one dashboard request, and counts the logged
/// statements that read stock_levels, products or stores.
async fn sql_count(ctx: &Context, db: &Path) -> BenchResult<usize> {
    let mut launch = Launch::new(&ctx.binary, db);
    launch.capture_stderr = true;
    launch.env = vec![
        ("STOCKROOM_LOG_SQL".into(), "true".into()),
        ("RUST_LOG".into(), "warn,sqlx::query=info".into()),
    ];
    let server = Server::start(&launch).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mark = server.stderr.lock().map(|v| v.len()).unwrap_or(0);
    let gql = server.client(1)?;
    gql.run(DASHBOARD, json!({})).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let count = server
        .stderr
        .lock()
        .map(|v| {
            v[mark..]
                .iter()
                .filter(|l| l.contains("sqlx::query"))
                .filter(|l| {
                    ["stock_levels", "products", "stores"]
                        .iter()
                        .any(|t| l.contains(&format!("FROM \\\"{t}\\\"")))
                })
                .count()
        })
        .unwrap_or(0);
    server.stop().await;
    Ok(count)
}

/// `dashboard-reads` on PostgreSQL: the server on one fresh database, the raw baseline (the
/// same SELECTs and JSON, `--read-clients` connections) on another seeded alike.
async fn dashboard_on_postgres(ctx: &Context, url: &str) -> BenchResult<Vec<Row>> {
    let name = "dashboard-reads-pg";
    eprintln!(
        "{name}: {} clients, {} runs × {:?}, PostgreSQL at {url}",
        ctx.read_clients, ctx.runs, ctx.duration
    );
    let served = crate::pg::Database::create(url, "dashboard_server", &ctx.binary).await?;
    let raw = crate::pg::Database::create(url, "dashboard_raw", &ctx.binary).await?;
    crate::pg::seed(&served.url, ctx.products, ctx.stores, HUGE_STOCK).await?;
    crate::pg::seed(&raw.url, ctx.products, ctx.stores, HUGE_STOCK).await?;
    let mut launch = Launch::new(&ctx.binary, &ctx.db(name));
    launch.database_url = Some(served.url.clone());
    let server = Server::start(&launch).await?;
    let gql = server.client(ctx.read_clients)?;
    let base_len = crate::pg::dashboard_body_len(&raw.url, 100).await?;
    warm_up(&gql, ctx.read_clients, base_len).await?;
    let read = |duration: Duration| read_run(&gql, ctx.read_clients, duration);
    let (server_runs, baseline_runs) = alternate(
        ctx.runs,
        "req/s",
        async || read(ctx.duration).await,
        async || crate::pg::dashboard_loop(&raw.url, ctx.read_clients, 100, ctx.duration).await,
    )
    .await?;
    server.stop().await;
    served.drop_now().await;
    raw.drop_now().await;
    Ok(rows_of(name, "req/s", &server_runs, &baseline_runs, true))
}
