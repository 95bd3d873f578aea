//! Acceptance 3: 200 concurrent registrations of a failing URL cost the origin one request
//! plus the configured retries, and every dfget fails with the status in its message.

mod cdn_common;

use std::collections::HashMap;
use std::time::Duration;

use cdn_common::{dfget, error_line};
use odonata_proto::messages::{ErrorBody, RegisterRequest};
use odonata_proto::PeerId;
use odonata_testkit::cluster::Supernode;
use odonata_testkit::origin::Origin;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_registrations_of_a_500_make_one_request_plus_retries() {
    let origin = Origin::local(HashMap::new(), 0).await.unwrap();
    let url = origin.url("status/500");
    let dir = tempfile::tempdir().unwrap();
    let sn = Supernode::start_with_config(
        dir.path(),
        "cdn:\n  source_retries: 2\n  retry_backoff: 300ms\n  negative_ttl: 60s\n",
    )
    .unwrap();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let reg_url = format!("http://{}/api/v1/tasks", sn.addr);
    let regs: Vec<_> = (0..200)
        .map(|i| {
            let req = RegisterRequest {
                url: url.clone(),
                headers: vec![],
                filter: vec![],
                digest: None,
                peer_id: PeerId(format!("p{i}")),
                peer_addr: format!("127.0.0.1:{}", 10000 + i),
                task_identity: None,
            };
            let http = http.clone();
            let reg_url = reg_url.clone();
            tokio::spawn(async move {
                let r = http.post(&reg_url).json(&req).send().await.unwrap();
                (r.status().as_u16(), r.json::<ErrorBody>().await.unwrap())
            })
        })
        .collect();
    let d = dir.path().to_owned();
    let sn_addr = sn.addr;
    let gets: Vec<_> = (0..200)
        .map(|i| {
            let d = d.clone();
            let url = url.clone();
            tokio::task::spawn_blocking(move || {
                let out = d.join(format!("o{i}"));
                dfget(&d, &format!("g{i}"), sn_addr, &url, &out, &[])
            })
        })
        .collect();
    for r in regs {
        let (code, body) = r.await.unwrap();
        assert_eq!(code, 502);
        assert_eq!(body.source_status, Some(500), "{}", body.error);
    }
    for g in gets {
        let o = g.await.unwrap();
        assert!(!o.status.success());
        let e = error_line(&o);
        assert!(e.contains("500"), "{e}");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        origin.requests_for("status/500"),
        3,
        "one request plus 2 retries"
    );
}
