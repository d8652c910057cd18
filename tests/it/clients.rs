//! The provider clients against the in-process sandbox over real HTTP: each verb the pipeline
//! uses, emnify's re-authentication when a token expires, error classification, and the lane
//! slowing down after a 429.

use std::sync::Arc;
use std::time::{Duration, Instant};

use simbatch::job::{Iccid, JobRow, Operation, Target};
use simbatch::pipeline::lane::Lane;
use simbatch::provider::emnify::{Emnify, OperationRequest};
use simbatch::provider::http::Http;
use simbatch::provider::limiter::{LaneLimits, RateGate};
use simbatch::provider::telnyx::Telnyx;
use simbatch::provider::twilio::Twilio;
use simbatch::provider::Observed;
use simbatch::provider::{ErrorClass, Polled, Sent};
use simbatch::sandbox::inventory::{self, EMNIFY_PREFIX, TELNYX_PREFIX, TWILIO_PREFIX};
use simbatch::sandbox::{Faults, Latency, LimitMode, SandboxConfig};

use crate::sandbox_support::{limiter, Sb};

fn http(sb: &Sb, kind: &str, limits: LaneLimits) -> Http {
    let base = url::Url::parse(&sb.url(&format!("/{kind}"))).unwrap();
    Http::new(
        &base,
        Arc::new(RateGate::new(limits)),
        Duration::from_secs(5),
    )
    .unwrap()
}

const OPEN: LaneLimits = LaneLimits {
    rate: None,
    max_in_flight: None,
    window: None,
};

async fn poll_until<F, Fut>(mut poll: F) -> Polled
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Polled, simbatch::provider::ProviderError>>,
{
    for _ in 0..100 {
        match poll().await.unwrap() {
            Polled::Waiting => tokio::time::sleep(Duration::from_millis(20)).await,
            done => return done,
        }
    }
    panic!("never settled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emnify_sim_endpoint_and_euicc_verbs() {
    let sb = Sb::plain(100).await;
    let client = Emnify::new(http(&sb, "emnify", OPEN), "app-token".into());
    let iccid = inventory::iccid(EMNIFY_PREFIX, 7);
    let sim = client.find_sim(&iccid, true).await.unwrap().unwrap();
    assert_eq!(
        (sim.id.as_str(), sim.status.as_str(), sim.group.as_deref()),
        ("7", "Activated", Some("1"))
    );
    assert_eq!(sim.device, Some(("7".to_string(), "Enabled".to_string())));
    let same = client.find_sim(&iccid[..19], false).await.unwrap().unwrap();
    assert_eq!(same.id, "7", "the 19-digit form finds the same SIM");
    assert!(client
        .find_sim(&inventory::iccid(EMNIFY_PREFIX, 999), false)
        .await
        .unwrap()
        .is_none());

    client.set_sim_status("7", "Suspended").await.unwrap();
    client.set_customer_org("7", "2").await.unwrap();
    client.set_endpoint_status("7", false).await.unwrap();
    let after = client.find_sim(&iccid, true).await.unwrap().unwrap();
    assert_eq!(
        (after.status.as_str(), after.group.as_deref()),
        ("Suspended", Some("2"))
    );
    assert_eq!(after.device.unwrap().1, "Disabled");

    let refused = client.set_sim_status("7", "Issued").await.unwrap_err();
    assert_eq!(
        (refused.class, refused.http_status, refused.code.as_deref()),
        (ErrorClass::Permanent, Some(409), Some("1406"))
    );

    client.delete_sim("8", Some("8")).await.unwrap();
    assert!(client
        .find_sim(&inventory::iccid(EMNIFY_PREFIX, 8), false)
        .await
        .unwrap()
        .is_none());

    let euicc = client
        .find_euicc(&inventory::eid(2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        euicc.enabled_profile().unwrap().iccid,
        inventory::operational_profile(2)
    );
    assert_eq!(
        euicc.fallback_profile().unwrap().iccid,
        inventory::bootstrap_profile(2)
    );
    let op = client
        .schedule(
            &euicc.id,
            &OperationRequest {
                action: 1,
                validity_period: 600,
                iccid: None,
                activation_code: None,
                enable: None,
                rollback: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        client
            .find_euicc(&inventory::eid(2))
            .await
            .unwrap()
            .unwrap()
            .operations[0]
            .status,
        1
    );
    let done = poll_until(|| client.poll_operation(&euicc.id, &op)).await;
    assert_eq!(
        done,
        Polled::Done {
            after: "Succeeded".into()
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emnify_reauthenticates_once_when_the_token_expires() {
    let sb = Sb::start(SandboxConfig {
        sims: 10,
        limits: LimitMode::Off,
        token_ttl: Duration::from_millis(200),
        require_token: Some("good".into()),
        ..SandboxConfig::default()
    })
    .await;
    let client = Emnify::new(http(&sb, "emnify", OPEN), "good".into());
    assert!(client
        .find_sim(&inventory::iccid(EMNIFY_PREFIX, 1), false)
        .await
        .unwrap()
        .is_some());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(client
        .find_sim(&inventory::iccid(EMNIFY_PREFIX, 1), false)
        .await
        .unwrap()
        .is_some());
    let auths = sb.stats().await["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["path"] == "POST /emnify/api/v1/authenticate")
        .map(|r| r["count"].as_u64().unwrap())
        .sum::<u64>();
    assert_eq!(auths, 2);

    let bad = Emnify::new(http(&sb, "emnify", OPEN), "bad".into());
    let err = bad
        .find_sim(&inventory::iccid(EMNIFY_PREFIX, 1), false)
        .await
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::Auth);
    assert!(err.message.contains("EMNIFY_APPLICATION_TOKEN"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilio_verbs() {
    let sb = Sb::plain(10).await;
    let client = Twilio::new(
        http(&sb, "twilio", OPEN),
        "AC00000000000000000000000000000001".into(),
        "token".into(),
    );
    let sim = client
        .find_sim(&inventory::iccid(TWILIO_PREFIX, 3))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((sim.status.as_str(), sim.settled), ("active", true));
    let sent = client
        .update(&sim.id, &[("Status", "inactive")])
        .await
        .unwrap();
    let Sent::Accepted { reference } = sent else {
        panic!("{sent:?}")
    };
    assert!(
        !client
            .find_sim(&inventory::iccid(TWILIO_PREFIX, 3))
            .await
            .unwrap()
            .unwrap()
            .settled
    );
    assert_eq!(
        poll_until(|| client.poll_status(&reference, "inactive")).await,
        Polled::Done {
            after: "inactive".into()
        }
    );
    let fleet = client.fleet_sid("reserve").await.unwrap();
    assert_eq!(fleet, "HF00000000000000000000000000000002");
    // A Fleet update is asynchronous too (Twilio changelog 2020-07-21), confirmed by the
    // Sim's `fleet_sid`.
    let moved = client.update(&sim.id, &[("Fleet", &fleet)]).await.unwrap();
    let Sent::Accepted { reference } = moved else {
        panic!("{moved:?}")
    };
    assert_eq!(
        poll_until(|| client.poll_status(&reference, &fleet)).await,
        Polled::Done {
            after: fleet.clone()
        }
    );

    let new = inventory::iccid(TWILIO_PREFIX, 12);
    let registered = client
        .register(&new, &inventory::registration_code(&new))
        .await
        .unwrap();
    assert_eq!(registered.status, "new");
    let err = client
        .register(&new, &inventory::registration_code(&new))
        .await
        .unwrap_err();
    assert_eq!(
        (err.http_status, err.code.as_deref()),
        (Some(409), Some("83003"))
    );
    let unauthorized = Twilio::new(http(&sb, "twilio", OPEN), "nobody".into(), "x".into());
    assert_eq!(
        unauthorized.find_sim(&new).await.unwrap_err().class,
        ErrorClass::Auth
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telnyx_verbs() {
    let sb = Sb::plain(10).await;
    let client = Telnyx::new(http(&sb, "telnyx", OPEN), "key".into());
    let sim = client
        .find_sim(&inventory::iccid(TELNYX_PREFIX, 2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(sim.status, "enabled");
    let Sent::Accepted { reference } = client.action(&sim.id, "set_standby").await.unwrap() else {
        panic!()
    };
    assert_eq!(
        poll_until(|| client.poll_action(&reference, "standby")).await,
        Polled::Done {
            after: "standby".into()
        }
    );
    let group = simbatch::sandbox::telnyx::group_id(1);
    assert_eq!(
        client.set_group(&sim.id, &group).await.unwrap(),
        Sent::Done { after: group }
    );
    let Sent::Accepted { reference } = client.delete(&sim.id, false).await.unwrap() else {
        panic!()
    };
    assert_eq!(
        poll_until(|| client.poll_deleted(&reference)).await,
        Polled::Done {
            after: "deleted".into()
        }
    );

    let codes: Vec<String> = [11, 12]
        .iter()
        .map(|&n| inventory::registration_code(&inventory::iccid(TELNYX_PREFIX, n)))
        .collect();
    let (registered, errors) = client
        .register(&[&codes[0], &codes[1], "RC00000000"])
        .await
        .unwrap();
    assert_eq!((registered.len(), errors.len()), (2, 1));
    assert_eq!(errors[0].0, Some(2), "the refusal points at the third code");
    assert_eq!(registered[1].0, inventory::iccid(TELNYX_PREFIX, 12));
    let done = poll_until(|| client.poll_settled(&registered[0].1.id)).await;
    assert_eq!(
        done,
        Polled::Done {
            after: "enabled".into()
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_slows_the_whole_lane() {
    let sb = Sb::start(SandboxConfig {
        sims: 10,
        limits: LimitMode::Scaled(0.01),
        ..SandboxConfig::default()
    })
    .await;
    // Telnyx at scaled:0.01 allows 1 request per 1-second window; 6 at once without a client
    // limit span at most 3 windows even on a loaded machine, so at least 3 are refused.
    let client = Arc::new(Telnyx::new(http(&sb, "telnyx", OPEN), "key".into()));
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            c.find_sim(&inventory::iccid(TELNYX_PREFIX, 1)).await
        }));
    }
    let mut limited = 0;
    for t in tasks {
        if let Err(e) = t.await.unwrap() {
            assert_eq!(e.class, ErrorClass::RateLimited);
            assert!(e.retry_after.is_some());
            limited += 1;
        }
    }
    assert!(limited >= 3);
    assert!(client.http().gate.slowdowns() >= 1);
    let started = std::time::Instant::now();
    client
        .find_sim(&inventory::iccid(TELNYX_PREFIX, 1))
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(100),
        "the next request waited for the window"
    );
}

fn suspend_row(provider: &str, kind: simbatch::job::ProviderKind, iccid: String) -> JobRow {
    JobRow {
        line: 2,
        id: "2".into(),
        provider: provider.into(),
        kind,
        target: Target::Sim {
            iccid: Iccid::from_trusted(iccid),
            eid: None,
        },
        operation: Operation::Suspend,
        group: None,
        not_before: None,
        extra: Vec::new(),
    }
}

/// Rows do not wait for the whole listing: a SIM on the first page is answered from it while
/// later pages are still being read, and "not listed" is said only once every page is in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listed_sim_is_answered_while_later_pages_are_still_read() {
    let sb = Sb::start(SandboxConfig {
        sims: 4_000,
        limits: LimitMode::Off,
        faults: Faults {
            latency: Latency {
                base_ms: 60,
                jitter_ms: 0,
            },
            ..Faults::default()
        },
        ..SandboxConfig::default()
    })
    .await;
    let lane = Lane {
        name: "twilio".into(),
        account: Box::new(Twilio::new(
            http(&sb, "twilio", OPEN),
            "AC00000000000000000000000000000001".into(),
            "t".into(),
        )),
        concurrency: 8,
        listing: Default::default(),
        limits: Default::default(),
    };
    let kind = simbatch::job::ProviderKind::Twilio;
    let first = suspend_row("twilio", kind, inventory::iccid(TWILIO_PREFIX, 1));
    let unknown = suspend_row("twilio", kind, inventory::iccid(TWILIO_PREFIX, 999_999));
    let listed_at = |row: &JobRow| {
        let lane = &lane;
        let row = row.clone();
        async move {
            let observed = lane.take_listed(&row).await.unwrap();
            (observed, Instant::now())
        }
    };
    // The listing is polled first, as in the engine: it announces itself before rows ask.
    let ((pages, done), (first_seen, first_at), (unknown_seen, unknown_at)) = tokio::join!(
        async {
            let pages = lane.prefetch(3_000, &Default::default()).await.unwrap();
            (pages, Instant::now())
        },
        listed_at(&first),
        listed_at(&unknown),
    );
    // 4,000 registered SIMs and as many unregistered: 8 pages of 1,000, one after the other.
    assert!(pages >= 4, "{pages} pages");
    match first_seen {
        Some(Observed::Sim(s)) => assert_eq!(s.status, "active"),
        other => panic!("SIM 1 should come from the listing: {other:?}"),
    }
    assert!(
        first_at + Duration::from_millis(100) < done,
        "SIM 1 was answered {:?} before the listing ended",
        done.saturating_duration_since(first_at)
    );
    assert_eq!(unknown_seen, Some(Observed::Missing));
    assert!(unknown_at >= done);
    assert_eq!(
        lane.take_listed(&first).await.unwrap(),
        None,
        "each entry is used once"
    );
}

/// Telnyx states its window in every answer: the lane learns where windows start, then fills
/// each to the stated limit and never past it (no 429, the sandbox's window never over).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_telnyx_lane_follows_the_providers_windows_without_a_refusal() {
    // scaled:0.5: 50 requests per 1-second window.
    let sb = Sb::start(SandboxConfig {
        sims: 10,
        limits: LimitMode::Scaled(0.5),
        ..SandboxConfig::default()
    })
    .await;
    let limits =
        simbatch::provider::provider_of(simbatch::job::ProviderKind::Telnyx).documented_limits();
    let client = Arc::new(Telnyx::new(http(&sb, "telnyx", limits), "key".into()));
    let until = Instant::now() + Duration::from_millis(3_500);
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut answered = 0;
            while Instant::now() < until {
                c.find_sim(&inventory::iccid(TELNYX_PREFIX, 1))
                    .await
                    .expect("no request is refused");
                answered += 1;
            }
            answered
        }));
    }
    let mut answered = 0;
    for t in tasks {
        answered += t.await.unwrap();
    }
    assert!(
        client.http().gate.following_window(),
        "the windows were learned"
    );
    assert_eq!(client.http().gate.slowdowns(), 0);
    let stats = sb.stats().await;
    let window = limiter(&stats, "telnyx");
    assert_eq!(window["refused"], 0, "{window}");
    assert!(
        window["peak"].as_u64() <= window["limit"].as_u64(),
        "{window}"
    );
    assert!(answered > 50, "{answered} answers in 3.5 s");
}
