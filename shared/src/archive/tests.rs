//! The archive on the in-memory store: keys, the line format, the seal (dedupe, idempotent,
//! resumable, safe against a concurrent writer), readers, and a person's access and erasure.

use super::*;
use crate::storage::MemoryStore;
use crate::subjects::SubjectKey;
use crate::values::Email;
use async_trait::async_trait;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn subject(email: &str) -> SubjectId {
    SubjectKey::for_tests().subject(&Email::parse(email).unwrap())
}

/// An event received at 10:15 on 2026-03-02, naming `who` (if anyone).
fn line(id: &str, who: &[&str]) -> Line {
    let body = format!(
        "{{\n  \"id\": \"{id}\",\n  \"type\": \"customer.updated\",\n  \"data\": {{\"email\": \"{}\", \"note\": \"ünïcode \\\"quoted\\\"\"}}\n}}",
        who.first().copied().unwrap_or("")
    );
    Line {
        id: id.into(),
        source: "stripe".into(),
        event_type: "customer.updated".into(),
        received_at: t("2026-03-02T10:15:00Z"),
        occurred_at: Some(t("2026-03-02T10:14:59Z")),
        subjects: who.iter().map(|w| subject(w)).collect(),
        body: Some(body),
        erased: false,
    }
}

fn hour() -> Hour {
    Hour::of(t("2026-03-02T10:15:00Z"))
}

fn sealed_lines(store: &MemoryStore, h: Hour) -> Vec<Line> {
    decode(&h.sealed_key(), &store.object(&h.sealed_key()).unwrap()).unwrap()
}

fn manifest(store: &MemoryStore, h: Hour) -> Manifest {
    serde_json::from_slice(&store.object(&h.manifest_key()).unwrap()).unwrap()
}

#[test]
fn hours_keys_and_placement() {
    let h = Hour::of(t("2026-03-02T10:59:59Z"));
    assert_eq!(h.start(), t("2026-03-02T10:00:00Z"));
    assert_eq!(h.to_string(), "2026-03-02T10");
    assert_eq!(Hour::parse("2026-03-02T10"), Some(h));
    assert_eq!(Hour::parse("2026-03-02T10:30:00Z"), Some(h));
    assert_eq!(Hour::parse("yesterday"), None);
    assert_eq!(h.next().to_string(), "2026-03-02T11");
    assert_eq!(h.sealed_key(), "archive/sealed/2026/03/02/10.ndjson.gz");
    assert_eq!(h.manifest_key(), "archive/manifests/2026/03/02/10.json");
    let b = h.new_batch_key();
    assert!(b.starts_with("archive/batch/2026/03/02/10/") && b.ends_with(".ndjson.gz"));
    assert!(h.new_batch_key() > b, "batch keys sort in writing order");
    for k in [b, h.sealed_key(), h.manifest_key()] {
        assert_eq!(Hour::from_key(&k), Some(h), "{k}");
    }
    assert_eq!(Hour::from_key("raw/stripe/2026/03/02/evt_1.json"), None);
    assert_eq!(Hour::from_key("archive/batch/2026/"), None);

    // Placed by the event's own time (a retry days later lands in the same hour), unless
    // implausible.
    let received = t("2026-03-05T08:00:00Z");
    assert_eq!(
        placement(Some(t("2026-03-02T10:14:59Z")), received),
        Hour::of(t("2026-03-02T10:00:00Z"))
    );
    assert_eq!(placement(None, received), Hour::of(received));
    assert_eq!(
        placement(Some(t("1970-01-01T00:00:00Z")), received),
        Hour::of(received)
    );
    assert_eq!(
        placement(Some(t("2027-01-01T00:00:00Z")), received),
        Hour::of(received)
    );

    let key = "archive/batch/2026/03/02/10/x.ndjson.gz";
    let loc = locator(key, "stripe", "evt_1");
    assert_eq!(loc, "archive/batch/2026/03/02/10/x.ndjson.gz#stripe/evt_1");
    assert_eq!(parse_locator(&loc), Some((h, "stripe", "evt_1")));
    assert_eq!(parse_locator("raw/stripe/evt_1.json"), None);
}

#[test]
fn lines_round_trip_with_their_bodies_byte_for_byte() {
    let lines = vec![line("evt_1", &["ada@example.com"]), line("evt_2", &[])];
    let bytes = encode(&lines).unwrap();
    assert_eq!(&bytes[..2], &[0x1f, 0x8b], "gzip");
    assert_eq!(decode("k", &bytes).unwrap(), lines);
    // One event per line, the body (with its newlines) a JSON string.
    let mut text = String::new();
    std::io::Read::read_to_string(&mut GzDecoder::new(&bytes[..]), &mut text).unwrap();
    assert_eq!(text.lines().count(), 2);
    assert!(
        !text.contains("ada@example.com\""),
        "escaped inside the body string only"
    );
    let tomb = lines[0].tombstone();
    let json = serde_json::to_value(&tomb).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"id": "evt_1", "source": "stripe", "type": "customer.updated",
            "received_at": "2026-03-02T10:15:00Z", "occurred_at": "2026-03-02T10:14:59Z",
            "erased": true})
    );
    assert!(decode("k", b"not gzip").is_err());
    let bad = {
        let mut e = GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(b"{\"id\": 1}\n").unwrap();
        e.finish().unwrap()
    };
    let err = decode("archive/batch/x", &bad).unwrap_err();
    assert!(err.to_string().contains("archive/batch/x"), "{err}");
}

#[tokio::test]
async fn the_seal_keeps_each_event_once_and_is_idempotent_and_resumable() {
    let store = MemoryStore::new();
    let h = hour();
    // A batch, then its redelivery (a duplicate of evt_1) with a new event.
    let first = write_batch(
        &store,
        h,
        &[line("evt_1", &["ada@example.com"]), line("evt_2", &[])],
    )
    .await
    .unwrap();
    write_batch(
        &store,
        h,
        &[line("evt_1", &["ada@example.com"]), line("evt_3", &[])],
    )
    .await
    .unwrap();
    // Readers never see the duplicate.
    let read = read_hour(&store, h).await.unwrap();
    assert_eq!(read.events.len(), 3);
    assert_eq!(read.duplicates, 1);
    assert_eq!(read.events[0].object, first);

    let done = seal_hour(&store, h).await.unwrap();
    assert_eq!((done.merged, done.events, done.duplicates), (2, 3, 1));
    let ids: Vec<String> = sealed_lines(&store, h).into_iter().map(|l| l.id).collect();
    assert_eq!(ids, ["evt_1", "evt_2", "evt_3"]);
    assert!(
        store.list(BATCH_PREFIX).await.unwrap().is_empty(),
        "batch objects deleted"
    );
    let m = manifest(&store, h);
    assert_eq!((m.events, m.erased), (3, 0));
    assert_eq!(
        m.subjects.get(&subject("ada@example.com")),
        Some(&vec!["stripe/evt_1".to_owned()])
    );

    // Again: nothing to do, nothing changed.
    let before = store.object(&h.sealed_key());
    assert_eq!(seal_hour(&store, h).await.unwrap().merged, 0);
    assert_eq!(store.object(&h.sealed_key()), before);

    // Late events (a retry of evt_2, a new evt_4): merged with what is sealed.
    write_batch(&store, h, &[line("evt_2", &[]), line("evt_4", &[])])
        .await
        .unwrap();
    let done = seal_hour(&store, h).await.unwrap();
    assert_eq!((done.merged, done.events, done.duplicates), (1, 4, 1));
    let ids: Vec<String> = sealed_lines(&store, h).into_iter().map(|l| l.id).collect();
    assert_eq!(ids, ["evt_1", "evt_2", "evt_3", "evt_4"]);
    assert_eq!(read_hour(&store, h).await.unwrap().events.len(), 4);
}

#[tokio::test]
async fn a_seal_run_skips_the_current_hour_unless_asked() {
    let store = MemoryStore::new();
    let (old, current) = (hour(), hour().next());
    write_batch(&store, old, &[line("evt_1", &[])])
        .await
        .unwrap();
    write_batch(&store, current, &[line("evt_2", &[])])
        .await
        .unwrap();
    let now = current.start() + Duration::minutes(10);
    let r = seal(&store, now, false).await.unwrap();
    assert_eq!(
        (r.hours.len(), r.events, r.skipped.clone()),
        (1, 1, vec![current])
    );
    assert_eq!(unsealed_hours(&store).await.unwrap(), vec![current]);
    let r = seal(&store, now, true).await.unwrap();
    assert_eq!((r.hours.len(), r.events), (1, 1));
    assert!(unsealed_hours(&store).await.unwrap().is_empty());
    assert_eq!(
        hours_between(&store, old.start(), now).await.unwrap(),
        vec![old, current]
    );
    assert_eq!(
        hours_between(&store, current.start(), now).await.unwrap(),
        vec![current]
    );
}

/// A store whose first conditional write of a sealed object loses to a concurrent seal that
/// merged another batch object first, and whose version deletes can be made to fail (a crash
/// between the writes and the deletes).
struct Racing {
    inner: MemoryStore,
    raced: AtomicBool,
    fail_deletes: AtomicBool,
    conditional_writes: AtomicUsize,
}

#[async_trait]
impl ObjectStore for Racing {
    async fn put(&self, key: &str, body: Vec<u8>, ct: &str) -> Result<()> {
        self.inner.put(key, body, ct).await
    }
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.inner.get(key).await
    }
    async fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(key).await
    }
    async fn erase_all_versions(&self, key: &str) -> Result<u64> {
        self.inner.erase_all_versions(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        self.inner.list(prefix).await
    }
    async fn presign_get(&self, key: &str, ttl: std::time::Duration) -> Result<String> {
        self.inner.presign_get(key, ttl).await
    }
    fn bucket(&self) -> &str {
        "racing"
    }
    async fn get_tagged(&self, key: &str) -> Result<Option<Tagged>> {
        self.inner.get_tagged(key).await
    }
    async fn put_if(
        &self,
        key: &str,
        body: Vec<u8>,
        ct: &str,
        expected: Option<&str>,
    ) -> Result<()> {
        self.conditional_writes.fetch_add(1, Ordering::SeqCst);
        if key.starts_with(SEALED_PREFIX) && !self.raced.swap(true, Ordering::SeqCst) {
            // Another seal wins the race: it sealed evt_x from a batch object of its own.
            self.inner
                .put(key, encode(&[line("evt_x", &[])])?, GZIP)
                .await?;
        }
        self.inner.put_if(key, body, ct, expected).await
    }
    async fn delete_version(&self, key: &str, version: Option<&str>) -> Result<()> {
        if self.fail_deletes.load(Ordering::SeqCst) {
            return Err(Error::dependency("s3", true, "down (simulated)"));
        }
        self.inner.delete_version(key, version).await
    }
    async fn erase_noncurrent_versions(&self, key: &str) -> Result<u64> {
        self.inner.erase_noncurrent_versions(key).await
    }
}

fn racing() -> Racing {
    Racing {
        inner: MemoryStore::new(),
        raced: AtomicBool::new(false),
        fail_deletes: AtomicBool::new(false),
        conditional_writes: AtomicUsize::new(0),
    }
}

#[tokio::test]
async fn a_concurrent_writer_never_loses_an_event() {
    let store = racing();
    let h = hour();
    write_batch(&store, h, &[line("evt_1", &[]), line("evt_2", &[])])
        .await
        .unwrap();
    let done = seal_hour(&store, h).await.unwrap();
    assert_eq!(done.conflicts, 1, "the first write lost and was redone");
    let ids: Vec<String> = sealed_lines(&store.inner, h)
        .into_iter()
        .map(|l| l.id)
        .collect();
    assert_eq!(ids, ["evt_x", "evt_1", "evt_2"], "the winner's event kept");
    assert!(store.conditional_writes.load(Ordering::SeqCst) >= 3);
}

#[tokio::test]
async fn a_seal_that_stops_before_its_deletes_is_finished_by_the_next_run() {
    let store = racing();
    store.raced.store(true, Ordering::SeqCst);
    let h = hour();
    write_batch(&store, h, &[line("evt_1", &[]), line("evt_2", &[])])
        .await
        .unwrap();
    store.fail_deletes.store(true, Ordering::SeqCst);
    assert!(seal_hour(&store, h).await.unwrap_err().is_retryable());
    // Sealed and still in its batch object: readers see it once.
    let read = read_hour(&store, h).await.unwrap();
    assert_eq!((read.events.len(), read.duplicates), (2, 2));
    store.fail_deletes.store(false, Ordering::SeqCst);
    let done = seal_hour(&store, h).await.unwrap();
    assert_eq!((done.events, done.duplicates), (2, 2));
    assert_eq!(sealed_lines(&store.inner, h).len(), 2);
    assert!(store.list(BATCH_PREFIX).await.unwrap().is_empty());
}

#[tokio::test]
async fn an_unreadable_object_is_reported_and_kept_never_dropped() {
    let store = MemoryStore::new();
    let h = hour();
    write_batch(&store, h, &[line("evt_1", &[])]).await.unwrap();
    let bad = format!("{}zzz-corrupt{OBJECT_SUFFIX}", h.batch_prefix());
    store.put(&bad, b"not gzip".to_vec(), GZIP).await.unwrap();
    let read = read_hour(&store, h).await.unwrap();
    assert_eq!(
        (read.events.len(), read.unreadable.clone()),
        (1, vec![bad.clone()])
    );
    assert!(seal_hour(&store, h).await.is_err());
    assert_eq!(
        store.list(BATCH_PREFIX).await.unwrap().len(),
        2,
        "nothing deleted"
    );
}

#[tokio::test]
async fn a_person_is_found_exported_and_erased_in_sealed_and_unsealed_hours() {
    let store = MemoryStore::new();
    let (sealed_hour, open_hour) = (hour(), hour().next());
    let ada = subject("ada@example.com");
    let bob_line = line("evt_bob", &["bob@example.com"]);
    write_batch(
        &store,
        sealed_hour,
        &[line("evt_a1", &["ada@example.com"]), bob_line.clone()],
    )
    .await
    .unwrap();
    seal_hour(&store, sealed_hour).await.unwrap();
    let mut later = line("evt_a2", &["ada@example.com", "ops@example.com"]);
    later.received_at = open_hour.start() + Duration::minutes(5);
    later.occurred_at = Some(later.received_at);
    write_batch(&store, open_hour, &[later.clone(), line("evt_anon", &[])])
        .await
        .unwrap();

    // Access: both of her events, each once, found without her address.
    let found = events_of(&store, &ada).await.unwrap();
    let ids: Vec<&str> = found.iter().map(|e| e.line.id.as_str()).collect();
    assert_eq!(ids, ["evt_a1", "evt_a2"]);
    assert!(found[1].locator().starts_with("archive/batch/"));
    assert_eq!(found[1].line.event()["data"]["email"], "ada@example.com");

    // Erasure: the open hour is sealed first, then both hours rewritten.
    let erased = erase_subject(&store, &ada).await.unwrap();
    assert_eq!(
        erased
            .iter()
            .map(|h| (h.hour, h.erased))
            .collect::<Vec<_>>(),
        vec![(sealed_hour, 1), (open_hour, 1)]
    );
    assert!(store.list(BATCH_PREFIX).await.unwrap().is_empty());
    for h in [sealed_hour, open_hour] {
        let lines = sealed_lines(&store, h);
        for l in &lines {
            let text = serde_json::to_string(l).unwrap();
            assert!(!text.contains("ada@example.com"), "{text}");
            assert!(!l.subjects.contains(&ada));
        }
        // Event accounting still adds up: tombstones keep id, source, type and times.
        assert_eq!(lines.len(), 2);
        let m = manifest(&store, h);
        assert_eq!((m.events, m.erased), (2, 1));
        assert!(!m.subjects.contains_key(&ada));
    }
    let tomb = &sealed_lines(&store, sealed_hour)[0];
    assert_eq!(*tomb, line("evt_a1", &[]).tombstone());
    // Other people's events untouched, byte for byte.
    assert_eq!(sealed_lines(&store, sealed_hour)[1], bob_line);
    assert!(
        manifest(&store, open_hour).subjects.is_empty(),
        "ops@ went with the event"
    );
    assert!(events_of(&store, &ada).await.unwrap().is_empty());
    assert_eq!(
        events_of(&store, &subject("bob@example.com"))
            .await
            .unwrap()
            .len(),
        1
    );

    // A redelivered copy arriving after the erasure: the tombstone is what readers and the
    // seal keep (the sealed lines come first).
    write_batch(&store, sealed_hour, &[line("evt_a1", &["ada@example.com"])])
        .await
        .unwrap();
    let read = read_hour(&store, sealed_hour).await.unwrap();
    assert!(read.events[0].line.erased);
    seal_hour(&store, sealed_hour).await.unwrap();
    assert!(sealed_lines(&store, sealed_hour)[0].erased);
    // Erasing again finds nothing left.
    let again = erase_subject(&store, &ada).await.unwrap();
    assert!(again.iter().all(|h| h.erased == 0), "{again:?}");
}
