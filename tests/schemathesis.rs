//! schemathesis, an API fuzzer no one here wrote, against the node's own OpenAPI
//! document (`/api/openapi.json`): generated requests for every operation, then
//! stateful sequences along the document's links, signed in as a verified user. No
//! response may be a 5xx, and every status, content type and body must be what the
//! document says. A fixed seed and a bounded number of examples keep it to about half a
//! minute; longer runs: the same command with a larger `--max-examples`.
mod common;
#[path = "../recorder/tests/support/mod.rs"]
mod support;

use common::TestServer;
use common::remote::register;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_keeps_to_its_openapi_document_under_generated_requests() {
    let py = tokio::task::spawn_blocking(support::python).await.unwrap();
    let srv = TestServer::start().await;
    let user = register(&srv, "fuzz@example.com").await;
    // Made from its sign-up link, so verified: every operation (invitations too) is
    // open to it.
    let schemathesis = std::path::Path::new(&py).with_file_name("schemathesis");
    let out = tokio::process::Command::new(&schemathesis)
        .args([
            "run",
            &format!("{}/api/openapi.json", srv.base),
            "--header",
            &format!("Authorization: Bearer {}", user.access),
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            "--phases",
            "coverage,fuzzing,stateful",
            "--max-examples",
            "10",
            "--seed",
            "20261202",
            "--workers",
            "1",
            "--request-timeout",
            "10",
            // Sockets are upgrades, not JSON; signing out, a password change and an
            // admin ending sessions would end the run's own session.
            "--exclude-path-regex",
            "socket|auth/logout|me/password|admin/users/.*/sessions",
        ])
        .env("NO_COLOR", "1")
        // Its crash cache (`.schemathesis/`) goes to the temporary directory, not the
        // repository.
        .current_dir(std::env::temp_dir())
        .output()
        .await
        .expect("schemathesis runs (scripts/ensure-venv.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    let summary = text
        .lines()
        .rev()
        .take(30)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n");
    println!("{summary}");
    assert!(
        out.status.success(),
        "schemathesis found failures:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    srv.stop().await;
}
