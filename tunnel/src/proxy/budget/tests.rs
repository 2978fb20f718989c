use super::*;

const MIB: u64 = 1024 * 1024;

#[tokio::test]
async fn a_read_waits_while_the_budget_is_spent_and_goes_on_when_a_chunk_is_dropped() {
    let budget = BufferBudget::new(MIB);
    let stream = Arc::new(StreamHold::default());
    // Eight parties, each at its share: the whole budget.
    let mut held: Vec<Charge> = (0..8)
        .map(|n| {
            budget
                .for_party(&format!("party-{n}"))
                .try_charge((MIB / 8) as usize, &stream)
                .expect("a party's share is an eighth of the budget")
        })
        .collect();
    assert_eq!(budget.in_use(), MIB);
    assert_eq!(stream.bytes(), MIB);
    let waiting = tokio::spawn({
        let budget = budget.clone();
        let other = Arc::new(StreamHold::default());
        async move { budget.for_party("newcomer").charge(64 * 1024, &other).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiting.is_finished(), "a read past the budget waits");
    assert_eq!(budget.paused(), 1);
    assert!(budget.under_pressure());
    let chunk = Chunk::new(Bytes::from_static(b"x"), held.pop());
    drop(chunk);
    assert_eq!(stream.bytes(), MIB - MIB / 8);
    let charge = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the waiting read is charged once bytes are given back")
        .unwrap();
    assert_eq!(budget.in_use(), MIB - MIB / 8 + 64 * 1024);
    assert!(!budget.under_pressure());
    drop((charge, held));
    assert_eq!(budget.in_use(), 0);
}

#[tokio::test]
async fn one_party_past_its_share_waits_alone() {
    let budget = BufferBudget::new(MIB);
    let stream = Arc::new(StreamHold::default());
    let greedy = budget.for_party("greedy");
    let share = greedy.try_charge((MIB / 8) as usize, &stream).unwrap();
    assert!(
        greedy.try_charge(1, &stream).is_none(),
        "past its share, a party gets nothing more"
    );
    let more = tokio::spawn({
        let greedy = greedy.clone();
        let stream = stream.clone();
        async move { greedy.charge(1024, &stream).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!more.is_finished());
    assert!(
        !budget.under_pressure(),
        "waiting on its own share is no pressure on the budget"
    );
    let other = budget
        .for_party("other")
        .try_charge((MIB / 8) as usize, &stream);
    assert!(other.is_some(), "others still read");
    drop(share);
    let more = tokio::time::timeout(Duration::from_secs(5), more)
        .await
        .expect("the party reads again once its bytes are gone")
        .unwrap();
    drop((more, other));
    assert_eq!(budget.in_use(), 0);
    assert_eq!(budget.parties.lock().unwrap().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_stream_is_stalled_only_while_it_holds_bytes_that_do_not_drain() {
    let budget = BufferBudget::new(MIB);
    let stream = Arc::new(StreamHold::default());
    let idle = tokio::time::timeout(STALL * 3, stalled(&stream)).await;
    assert!(idle.is_err(), "a stream holding nothing never stalls");
    let reads = budget.for_party("a");
    let first = reads.try_charge(1000, &stream).unwrap();
    let second = reads.try_charge(1000, &stream).unwrap();
    let draining = async {
        tokio::time::sleep(STALL / 2).await;
        drop(first);
        tokio::time::sleep(STALL).await;
    };
    let watched = tokio::time::timeout(STALL + STALL / 4, stalled(&stream));
    let (stalled_early, ()) = tokio::join!(watched, draining);
    assert!(
        stalled_early.is_err(),
        "bytes drained within the period: not stalled"
    );
    let held = tokio::time::timeout(STALL * 3, stalled(&stream)).await;
    assert!(held.is_ok(), "1000 bytes held for a whole period: stalled");
    drop(second);
}

#[test]
fn the_charge_stays_with_the_last_piece_of_a_split_chunk() {
    let budget = BufferBudget::new(MIB);
    let stream = Arc::new(StreamHold::default());
    let charge = budget.for_party("a").try_charge(1000, &stream).unwrap();
    let mut rest = Chunk::new(Bytes::from(vec![7u8; 1000]), Some(charge));
    let first = rest.split_to(400);
    assert_eq!((first.len(), rest.len()), (400, 600));
    drop(first);
    assert_eq!(budget.in_use(), 1000, "the first piece carries no charge");
    drop(rest);
    assert_eq!(budget.in_use(), 0);
}

#[test]
fn windows_narrow_as_their_share_is_taken_and_never_take_the_reads_share() {
    let budget = BufferBudget::new(128 * MIB);
    let batch = 256 * 1024;
    let mut sizes = Vec::new();
    let mut held = Vec::new();
    for _ in 0..40 {
        let window = budget.window(batch);
        sizes.push(window.size);
        held.push(window);
    }
    // A quarter, 32 MiB, for windows: one of 16 MiB, then 4 MiB ones, then smaller, then
    // the floor.
    assert_eq!(sizes[0], 16 * 1024 * 1024);
    assert_eq!(sizes[1], 4 * 1024 * 1024);
    assert_eq!(*sizes.last().unwrap(), FLOOR_WINDOW);
    assert!(!held.last().unwrap().large_tls_buffers);
    assert!(budget.in_windows() <= 32 * MIB);
    assert!(
        budget.limit() - budget.in_use() >= 96 * MIB,
        "three quarters of the budget are left for reads"
    );
    drop(held);
    assert_eq!(budget.in_use(), 0);
    assert_eq!(budget.in_windows(), 0);
    assert_eq!(budget.window(batch).size, 16 * 1024 * 1024);
}
