use std::time::Duration;

use super::*;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// Whether the slot has been told it was evicted (without waiting).
fn was_evicted(slot: &PreTlsSlot) -> bool {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(async {
        tokio::time::timeout(Duration::from_millis(1), slot.evicted())
            .await
            .is_ok()
    })
}

#[test]
fn the_per_address_cap_refuses_and_a_slot_frees_itself() {
    let slots = PreTls::new(10, 2, vec![]);
    let a1 = slots.admit(ip("10.0.1.1")).unwrap();
    let _a2 = slots.admit(ip("10.0.1.1")).unwrap();
    assert!(matches!(
        slots.admit(ip("10.0.1.1")),
        Err(Refusal::UnauthenticatedFromAddress)
    ));
    drop(a1);
    let _a3 = slots
        .admit(ip("10.0.1.1"))
        .expect("a freed slot is taken again");
    assert_eq!(slots.held(), (2, 0));
}

#[test]
fn a_newcomer_takes_the_oldest_slot_of_the_largest_prefix() {
    let slots = PreTls::new(4, 4, vec![]);
    // The flood: three from 10.0.1.0/24, the legit one from elsewhere.
    let flood: Vec<PreTlsSlot> = ["10.0.1.1", "10.0.1.2", "10.0.1.3"]
        .iter()
        .map(|a| slots.admit(ip(a)).unwrap())
        .collect();
    let legit = slots.admit(ip("10.0.9.9")).unwrap();
    assert_eq!(slots.held(), (4, 0));
    // Full: the flood's next connection evicts the flood's oldest, never the legit one.
    let next = slots.admit(ip("10.0.1.4")).unwrap();
    assert!(was_evicted(&flood[0]));
    assert!(!was_evicted(&flood[1]) && !was_evicted(&legit));
    // Another caller from elsewhere also evicts from the flood.
    let other = slots.admit(ip("10.0.8.8")).unwrap();
    assert!(was_evicted(&flood[1]));
    assert!(!was_evicted(&legit) && !was_evicted(&other) && !was_evicted(&next));
    assert_eq!(slots.held(), (4, 0), "an eviction hands its slot over");
    drop(flood);
    assert_eq!(
        slots.held(),
        (3, 0),
        "only the one not evicted gave a slot back"
    );
    drop((legit, next, other));
    assert_eq!(slots.held(), (0, 0));
    let state = slots.state.lock().unwrap();
    assert!(state.groups.is_empty() && state.per_address.is_empty());
}

#[test]
fn a_prefix_alone_evicts_its_own_oldest() {
    let slots = PreTls::new(3, 10, vec![]);
    let held: Vec<PreTlsSlot> = (1..=3)
        .map(|i| slots.admit(ip(&format!("fd00:1::{i}"))).unwrap())
        .collect();
    let newer = slots.admit(ip("fd00:1::ff")).unwrap();
    assert!(was_evicted(&held[0]) && !was_evicted(&held[1]) && !was_evicted(&newer));
}

#[test]
fn known_sources_have_a_reserve_and_are_never_evicted() {
    let slots = PreTls::new(4, 10, vec!["10.0.0.0/24".parse().unwrap()]);
    slots.authenticated(ip("10.0.7.7"));
    let known: Vec<PreTlsSlot> = (0..4)
        .map(|_| slots.admit(ip("10.0.7.7")).unwrap())
        .collect();
    // Every shared slot is a known source's: an unknown one finds nothing to evict.
    assert!(matches!(
        slots.admit(ip("10.0.1.1")),
        Err(Refusal::Unauthenticated)
    ));
    // A configured peer still gets the reserve (a quarter of 4: 1).
    let peer = slots.admit(ip("10.0.0.2")).unwrap();
    assert_eq!(slots.held(), (4, 1));
    assert!(matches!(
        slots.admit(ip("10.0.0.3")),
        Err(Refusal::Unauthenticated)
    ));
    assert!(known.iter().all(|k| !was_evicted(k)) && !was_evicted(&peer));
    drop(peer);
    assert_eq!(slots.held(), (4, 0));
}

#[test]
fn sixteen_flooding_addresses_cannot_keep_a_caller_from_elsewhere_out() {
    // 16 addresses of one /24 each holding their cap, over and over.
    let slots = PreTls::new(64, 8, vec![]);
    let mut flood = Vec::new();
    for round in 0..8 {
        for host in 0..16 {
            let _ = round;
            if let Ok(slot) = slots.admit(ip(&format!("10.0.1.{}", host + 1))) {
                flood.push(slot);
            }
        }
    }
    assert_eq!(slots.held(), (64, 0));
    for i in 0..100 {
        let caller = slots
            .admit(ip(&format!("10.0.{}.1", 100 + i % 50)))
            .expect("a caller from elsewhere always gets a slot");
        // The flood goes on while it handshakes.
        flood.retain(|slot| !was_evicted(slot));
        for host in 0..16 {
            if let Ok(slot) = slots.admit(ip(&format!("10.0.1.{}", host + 1))) {
                flood.push(slot);
            }
        }
        assert!(
            !was_evicted(&caller),
            "the caller kept its slot through the flood"
        );
    }
}

#[test]
fn known_addresses_are_bounded() {
    let slots = PreTls::new(4, 4, vec![]);
    for i in 0..(KNOWN_ADDRESSES as u32 + 100) {
        slots.authenticated(IpAddr::from(i.to_be_bytes()));
    }
    let known = slots.known.lock().unwrap();
    assert!(known.since.len() <= KNOWN_ADDRESSES);
    assert!(known.order.len() <= KNOWN_ADDRESSES * 2);
}
