//! Listening statistics at scale: `Store::listening_stats` over a year of 100 000
//! plays of one user, on SQLite and on PostgreSQL, beside other users' plays.
//!
//! Each backend gets a fresh database, filled in bulk (one statement), analysed as the
//! server's databases are (`ANALYZE`; `VACUUM ANALYZE` stands in for PostgreSQL's
//! autovacuum). Then, in the same run and on the same rows:
//! - **floor**: `count(*)` and `sum(listened_ms)` of the user's plays in the period,
//!   the cheapest read of the rows the statistics read;
//! - **stats**: the statistics themselves (week, month, year, all);
//! - **no index**: the year's statistics with the index out of the planner's reach
//!   (SQLite `NOT INDEXED`; PostgreSQL with index scans off), what the schema saves.
//!
//! Usage: `sc-statsbench [--plays N] [--others N] [--repeats N] [--pg-url URL]`
//! (defaults 100000, 10 users of 20000 plays, 30, the local PostgreSQL). Prints a
//! Markdown table of milliseconds: median and max of the repeats.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use control_api::store::postgres::{LISTENING_STATS_SQL as PG_SQL, PgStore};
use control_api::store::sqlite::{LISTENING_STATS_SQL as SQLITE_SQL, SqliteStore};
use control_api::store::{Millis, NewUser, Role, Store};
use sqlx::Connection;

const DAY: Millis = 24 * 3_600_000;

struct Args {
    plays: i64,
    others: i64,
    repeats: usize,
    pg_url: String,
}

fn args() -> Result<Args> {
    let mut a = Args {
        plays: 100_000,
        others: 10,
        repeats: 30,
        pg_url: "postgres://postgres@127.0.0.1:5432/postgres".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().with_context(|| format!("{k} needs a value"))?;
        match k.as_str() {
            "--plays" => a.plays = v.parse()?,
            "--others" => a.others = v.parse()?,
            "--repeats" => a.repeats = v.parse()?,
            "--pg-url" => a.pg_url = v,
            _ => anyhow::bail!("unknown option {k}"),
        }
    }
    Ok(a)
}

/// Median and max of `n` timed runs of `f`, in milliseconds.
async fn time<F, Fut>(n: usize, mut f: F) -> Result<(f64, f64)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    // Warm the caches first: the server's are warm for a user who looks again.
    for _ in 0..3 {
        f().await?;
    }
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f().await?;
        v.push(t.elapsed());
    }
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    Ok((ms(v[v.len() / 2]), ms(v[v.len() - 1])))
}

async fn users<S: Store>(s: &S, n: i64) -> Result<Vec<String>> {
    let mut ids = Vec::new();
    for i in 0..n {
        let u = s
            .create_user(NewUser {
                email: format!("listener{i}@example.com"),
                display_name: format!("Listener {i}"),
                password_hash: "$argon2id$bench".into(),
                role: Role::User,
                email_verified: true,
            })
            .await?;
        ids.push(u.id);
    }
    Ok(ids)
}

/// Plays of `user`: `n` spread evenly over the year before `now`, over 5 000 tracks
/// of 800 artists and 1 500 albums, most plays on few tracks (i² mod 5 000).
fn fill_sql(series: &str, user: &str, n: i64, now: Millis) -> String {
    let step = 365 * DAY / n.max(1);
    format!(
        "INSERT INTO plays (id, user_id, started_at, device_id, track_key, track_id, title, \
         artist, album, duration_ms, listened_ms) \
         SELECT '{user}-' || i, '{user}', {now} - i * {step}, 'phone', (i * i) % 5000, \
         't' || ((i * i) % 5000), 'Track ' || ((i * i) % 5000), 'Artist ' || ((i * i) % 5000 % 800), \
         'Album ' || ((i * i) % 5000 % 1500), 240000, 30000 + (i % 7) * 30000 FROM {series}"
    )
}

/// What each track key stands for, from the plays made.
const NAME_TRACKS: &str = "INSERT INTO play_tracks \
    SELECT DISTINCT user_id, track_key, title, artist, album, track_id FROM plays";

struct Row {
    backend: &'static str,
    what: String,
    median: f64,
    max: f64,
}

/// Times `f` (median and max of `repeats`) as the row `what` of `backend`.
async fn measured<F, Fut>(
    out: &mut Vec<Row>,
    backend: &'static str,
    what: String,
    repeats: usize,
    f: F,
) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let (median, max) = time(repeats, f).await?;
    out.push(Row {
        backend,
        what,
        median,
        max,
    });
    Ok(())
}

/// Every row of one backend, on its filled and analysed database: the floor
/// (`floor`), the statistics of each period, the year out of the index's reach
/// (`unindexed`), then the year again after the user's plays since a time were
/// rewritten twice, as a play is (when it counts, and when it ends), and the table
/// analysed but not vacuumed (`rewrite`).
#[allow(clippy::too_many_arguments)]
async fn backend<S: Store>(
    out: &mut Vec<Row>,
    backend: &'static str,
    s: &S,
    target: &str,
    now: Millis,
    repeats: usize,
    floor: impl AsyncFn() -> Result<()>,
    unindexed: impl AsyncFn() -> Result<()>,
    rewrite: impl AsyncFn(Millis) -> Result<()>,
) -> Result<()> {
    let what = "floor: count the year's plays".to_owned();
    measured(out, backend, what, repeats, || floor()).await?;
    for (name, days) in [("week", 7), ("month", 30), ("year", 365), ("all", 0)] {
        let since = if days == 0 {
            Millis::MIN
        } else {
            now - days * DAY
        };
        measured(out, backend, format!("stats, {name}"), repeats, || async {
            let st = s.listening_stats(target, since, 10).await?;
            anyhow::ensure!(
                st.plays > 0 && st.tracks.len() == 10,
                "no statistics: {} plays, {} tracks",
                st.plays,
                st.tracks.len()
            );
            Ok(())
        })
        .await?;
    }
    let what = "no index: stats, year".to_owned();
    measured(out, backend, what, repeats.min(5), || unindexed()).await?;
    for (label, from) in [
        ("the last week's plays", now - 7 * DAY),
        ("every play", Millis::MIN),
    ] {
        for _ in 0..2 {
            rewrite(from).await?;
        }
        let what = format!("stats, year, {label} rewritten twice, not vacuumed");
        measured(out, backend, what, repeats, || async {
            s.listening_stats(target, now - 365 * DAY, 10).await?;
            Ok(())
        })
        .await?;
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let a = args()?;
    let now = control_api::auth::now_millis();
    let mut out = Vec::new();

    // SQLite: a file database, as the server's.
    let dir = std::env::temp_dir().join(format!("sc-statsbench-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir)?;
    let s = SqliteStore::connect(dir.join("bench.db").to_str().context("path")?).await?;
    s.migrate().await?;
    let ids = users(&s, a.others + 1).await?;
    let (target, others) = ids.split_first().context("users")?;
    let series = |n: i64| {
        format!(
            "(WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n}) \
             SELECT i FROM n)"
        )
    };
    let t = Instant::now();
    sqlx::query(sqlx::AssertSqlSafe(fill_sql(
        &series(a.plays),
        target,
        a.plays,
        now,
    )))
    .execute(s.pool())
    .await?;
    for o in others {
        sqlx::query(sqlx::AssertSqlSafe(fill_sql(
            &series(20_000),
            o,
            20_000,
            now,
        )))
        .execute(s.pool())
        .await?;
    }
    sqlx::query(NAME_TRACKS).execute(s.pool()).await?;
    sqlx::query("ANALYZE").execute(s.pool()).await?;
    eprintln!("sqlite: filled in {:?}", t.elapsed());
    let year = now - 365 * DAY;
    let unindexed =
        SQLITE_SQL.replace("plays p INDEXED BY plays_user_track", "plays p NOT INDEXED");
    backend(
        &mut out,
        "SQLite",
        &s,
        target,
        now,
        a.repeats,
        async || {
            let (n, _): (i64, i64) = sqlx::query_as(
                "SELECT count(*), coalesce(sum(listened_ms), 0) FROM plays \
                 WHERE user_id = ?1 AND started_at >= ?2",
            )
            .bind(target)
            .bind(year)
            .fetch_one(s.pool())
            .await?;
            anyhow::ensure!(n > 0, "no plays");
            Ok(())
        },
        async || {
            sqlx::query(sqlx::AssertSqlSafe(unindexed.clone()))
                .bind(target)
                .bind(year)
                .bind(10)
                .fetch_all(s.pool())
                .await?;
            Ok(())
        },
        async |from| {
            sqlx::query(
                "UPDATE plays SET listened_ms = listened_ms + 1000 \
                 WHERE user_id = ?1 AND started_at >= ?2",
            )
            .bind(target)
            .bind(from)
            .execute(s.pool())
            .await?;
            sqlx::query("ANALYZE").execute(s.pool()).await?;
            Ok(())
        },
    )
    .await?;
    s.pool().close().await;
    let _ = std::fs::remove_dir_all(&dir);

    // PostgreSQL: a fresh database on the given server, dropped at the end.
    let name = format!("sc_statsbench_{}", rand::random::<u32>());
    let mut admin = sqlx::PgConnection::connect(&a.pg_url).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await?;
    let url = match a.pg_url.rsplit_once('/') {
        Some((server, _)) => format!("{server}/{name}"),
        None => anyhow::bail!("--pg-url must name a database"),
    };
    let result = async {
        let s = PgStore::connect(&url).await?;
        s.migrate().await?;
        let ids = users(&s, a.others + 1).await?;
        let (target, others) = ids.split_first().context("users")?;
        let t = Instant::now();
        let series = |n: i64| format!("generate_series(1::bigint, {n}) AS i");
        sqlx::query(sqlx::AssertSqlSafe(fill_sql(
            &series(a.plays),
            target,
            a.plays,
            now,
        )))
        .execute(s.pool())
        .await?;
        for o in others {
            sqlx::query(sqlx::AssertSqlSafe(fill_sql(
                &series(20_000),
                o,
                20_000,
                now,
            )))
            .execute(s.pool())
            .await?;
        }
        sqlx::query(NAME_TRACKS).execute(s.pool()).await?;
        sqlx::query("VACUUM ANALYZE plays")
            .execute(s.pool())
            .await?;
        eprintln!("postgres: filled in {:?}", t.elapsed());
        // The same statement on a connection whose planner may use no index.
        let unindexed: sqlx::postgres::PgConnectOptions = url.parse()?;
        let unindexed = sqlx::PgPool::connect_with(unindexed.options([
            ("enable_indexscan", "off"),
            ("enable_indexonlyscan", "off"),
            ("enable_bitmapscan", "off"),
        ]))
        .await?;
        backend(
            &mut out,
            "PostgreSQL",
            &s,
            target,
            now,
            a.repeats,
            async || {
                let (n, _): (i64, i64) = sqlx::query_as(
                    "SELECT count(*), coalesce(sum(listened_ms), 0)::bigint FROM plays \
                     WHERE user_id = $1 AND started_at >= $2",
                )
                .bind(target)
                .bind(year)
                .fetch_one(s.pool())
                .await?;
                anyhow::ensure!(n > 0, "no plays");
                Ok(())
            },
            async || {
                sqlx::query(PG_SQL)
                    .bind(target)
                    .bind(year)
                    .bind(10i64)
                    .fetch_all(&unindexed)
                    .await?;
                Ok(())
            },
            async |from| {
                sqlx::query(
                    "UPDATE plays SET listened_ms = listened_ms + 1000 \
                     WHERE user_id = $1 AND started_at >= $2",
                )
                .bind(target)
                .bind(from)
                .execute(s.pool())
                .await?;
                sqlx::query("ANALYZE plays").execute(s.pool()).await?;
                Ok(())
            },
        )
        .await?;
        unindexed.close().await;
        s.pool().close().await;
        anyhow::Ok(())
    }
    .await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await?;
    result?;

    println!(
        "plays: {} of the user over a year, {} other users × 20 000; {} repeats (median, max)\n",
        a.plays, a.others, a.repeats
    );
    println!("| backend | what | median ms | max ms | × floor |");
    println!("|---|---|---|---|---|");
    for r in &out {
        let floor = out
            .iter()
            .find(|f| f.backend == r.backend && f.what.starts_with("floor"))
            .map_or(f64::NAN, |f| f.median);
        println!(
            "| {} | {} | {:.2} | {:.2} | {:.1} |",
            r.backend,
            r.what,
            r.median,
            r.max,
            r.median / floor
        );
    }
    for backend in ["SQLite", "PostgreSQL"] {
        // As a server sees it: analysed, vacuumed as autovacuum keeps a table, the
        // plays of the last days just written.
        let steady = out
            .iter()
            .filter(|r| {
                r.backend == backend
                    && r.what.starts_with("stats")
                    && !r.what.contains("every play")
            })
            .map(|r| r.median)
            .fold(0.0, f64::max);
        let unvacuumed = out
            .iter()
            .find(|r| r.backend == backend && r.what.contains("every play"))
            .map_or(f64::NAN, |r| r.median);
        println!(
            "\n{backend}: any period, up to a year of plays, in {steady:.1} ms at most (median): {} \
             the 50 ms target; {unvacuumed:.1} ms with every play rewritten and never vacuumed",
            if steady < 50.0 { "meets" } else { "MISSES" }
        );
    }
    Ok(())
}
