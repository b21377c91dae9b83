//! The spend API against its OpenAPI document, as an outside client sees
//! it: Schemathesis (from the project venv) generates requests from
//! `docs/openapi.yaml`, valid and invalid, and sends them over HTTP to the
//! local runner (`make dev`'s server, on DynamoDB Local and moto). No
//! answer may be a 5xx, and every answer must conform to the document:
//! declared status, declared content type and headers, body matching the
//! schema. The run is bounded (examples per operation, fixed seed) so it is
//! the same run every time.

use std::path::{Path, PathBuf};
use std::process::Command;

use tokenbill_tests::{fresh_store, funded_user, sqs, unique_name};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
/// Test cases per operation and phase: enough to reach every status the
/// handler gives, small enough for well under a minute.
const MAX_EXAMPLES: &str = "100";
const SEED: &str = "20261130";
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_headers_conformance,response_schema_conformance";

/// Schemathesis from the project venv, installed by `stack.sh install`
/// (which `make test` runs first) when a local run has not yet.
fn schemathesis() -> PathBuf {
    let bin = Path::new(ROOT).join(".venv/bin/schemathesis");
    if !bin.exists() {
        let status = Command::new(Path::new(ROOT).join("infra/local-stack/stack.sh"))
            .arg("install")
            .status()
            .expect("run stack.sh install");
        assert!(status.success(), "stack.sh install failed");
    }
    assert!(bin.exists(), "{} is missing after stack.sh install", bin.display());
    bin
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_nonconformance() {
    let store = fresh_store().await;
    let sqs = sqs().await;
    tokenbill_dev::prepare(&store, &sqs).await.expect("prepare the stack");
    // Generated user ids are often small: some of them exist and have tokens.
    for id in 1..=5 {
        funded_user(&store, id, 1_000_000).await;
    }
    let service_key = tokenbill_dev::dev_service_key(&store).await.expect("a service key");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let base = format!("http://{}", listener.local_addr().expect("bound address"));
    let app = tokenbill_dev::local_app(store, sqs, &unique_name("conformance"), base.clone())
        .await
        .expect("the local runner");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(tokenbill_dev::serve(listener, app.state, async {
        let _ = stopped.await;
    }));

    // Hypothesis keeps its example database in the working directory.
    let workdir = std::env::temp_dir().join(unique_name("schemathesis"));
    std::fs::create_dir_all(&workdir).expect("a working directory");
    let mut run = Command::new(schemathesis());
    run.current_dir(&workdir)
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .env("NO_COLOR", "1")
        .args(["run", &format!("{ROOT}/docs/openapi.yaml"), "--url", &base])
        .args(["--header", &format!("Authorization: Bearer {service_key}")])
        .args(["--checks", CHECKS, "--max-examples", MAX_EXAMPLES, "--seed", SEED])
        .args([
            "--workers",
            "2",
            "--request-timeout",
            "10",
            "--output-truncate",
            "false",
        ]);
    let output = tokio::task::spawn_blocking(move || run.output())
        .await
        .expect("join")
        .expect("run schemathesis");
    let _ = std::fs::remove_dir_all(&workdir);
    stop.send(()).expect("server still running");
    server.await.expect("join server").expect("server ran");

    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "schemathesis found problems ({}):\n{stdout}\n{stderr}",
        output.status
    );
    // It really ran: every operation in every phase, hundreds of cases.
    assert!(stdout.contains("Tested: 7"), "not every operation ran:\n{stdout}");
    for phase in ["Examples", "Coverage", "Fuzzing", "Stateful"] {
        assert!(
            stdout.contains(&format!("✅ {phase}")),
            "{phase} did not pass:\n{stdout}"
        );
    }
    let cases = stdout
        .lines()
        .find_map(|line| line.trim().strip_suffix(" passed")?.split_once(" generated, "))
        .map(|(generated, passed)| (generated.parse::<u32>().ok(), passed.parse::<u32>().ok()));
    match cases {
        Some((Some(generated), Some(passed))) => {
            assert!(
                generated >= 300 && passed == generated,
                "{generated} generated, {passed} passed"
            )
        }
        _ => panic!("no test case count in the output:\n{stdout}"),
    }
}
