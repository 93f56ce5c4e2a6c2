use super::*;
use crate::disk::test_dir::TempDir;

fn payload(i: u64) -> Vec<u8> {
    format!("entry {i} ")
        .repeat(1 + (i % 7) as usize)
        .into_bytes()
}

fn append_range(log: &mut SegmentLog, from: u64, to: u64) {
    let payloads: Vec<(u64, Vec<u8>)> = (from..to).map(|i| (i, payload(i))).collect();
    let refs: Vec<(u64, &[u8])> = payloads.iter().map(|(i, p)| (*i, &p[..])).collect();
    log.append(&refs).unwrap();
}

fn indexes(entries: &[(u64, Vec<u8>)]) -> Vec<u64> {
    entries.iter().map(|(i, _)| *i).collect()
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    files.sort();
    files
}

#[test]
fn entries_come_back_after_a_reopen_across_segments() {
    let dir = TempDir::new();
    let mut log = SegmentLog::open(&dir.0, 256).unwrap().log;
    append_range(&mut log, 1, 101);
    log.sync().unwrap();
    assert!(log.segment_count() > 3, "{} segments", log.segment_count());
    drop(log);
    let again = SegmentLog::open(&dir.0, 256).unwrap();
    assert_eq!(again.cut, None);
    assert_eq!(indexes(&again.entries), (1..101).collect::<Vec<_>>());
    for (i, p) in &again.entries {
        assert_eq!(p, &payload(*i));
    }
    let mut log = again.log;
    assert_eq!(log.last_index(), Some(100));
    append_range(&mut log, 101, 103);
    assert!(matches!(
        log.append(&[(200, b"gap")]),
        Err(DiskError::NotNext {
            last: 102,
            got: 200
        })
    ));
}

#[test]
fn a_torn_tail_is_cut_back_to_the_last_whole_entry() {
    let dir = TempDir::new();
    let mut log = SegmentLog::open(&dir.0, 1 << 20).unwrap().log;
    append_range(&mut log, 1, 11);
    drop(log);
    let file = segment_files(&dir.0).pop().unwrap();
    let len = fs::metadata(&file).unwrap().len();
    let f = OpenOptions::new().write(true).open(&file).unwrap();
    f.set_len(len - 3).unwrap();
    drop(f);

    let again = SegmentLog::open(&dir.0, 1 << 20).unwrap();
    let cut = again.cut.expect("the torn record is found");
    assert_eq!(cut.damage, Damage::Torn);
    assert_eq!(indexes(&again.entries), (1..10).collect::<Vec<_>>());
    // The file is cut where the good entries end, and the log goes on from there.
    assert_eq!(fs::metadata(&file).unwrap().len(), cut.at);
    let mut log = again.log;
    append_range(&mut log, 10, 12);
    drop(log);
    let third = SegmentLog::open(&dir.0, 1 << 20).unwrap();
    assert_eq!(third.cut, None);
    assert_eq!(indexes(&third.entries), (1..12).collect::<Vec<_>>());
}

#[test]
fn a_flipped_byte_drops_its_entry_and_every_later_segment() {
    let dir = TempDir::new();
    let mut log = SegmentLog::open(&dir.0, 300).unwrap().log;
    append_range(&mut log, 1, 61);
    drop(log);
    let files = segment_files(&dir.0);
    assert!(files.len() >= 4);
    // Flip a byte in the payload of the second record of the second segment.
    let victim = &files[1];
    let mut bytes = fs::read(victim).unwrap();
    let first = frame::read_header(&bytes).unwrap();
    let scan = frame::scan(&bytes, first);
    let flip_at = scan.records[1].payload.start;
    bytes[flip_at] ^= 0x01;
    fs::write(victim, &bytes).unwrap();

    let again = SegmentLog::open(&dir.0, 300).unwrap();
    let cut = again.cut.expect("the flipped byte is found");
    assert_eq!(cut.damage, Damage::Checksum);
    assert_eq!(cut.removed_segments, files.len() - 2);
    assert_eq!(indexes(&again.entries), (1..first + 1).collect::<Vec<_>>());
    assert_eq!(segment_files(&dir.0).len(), 2);
    assert_eq!(again.log.last_index(), Some(first));
}

#[test]
fn a_foreign_file_or_another_format_is_refused_and_left_alone() {
    let dir = TempDir::new();
    let mut log = SegmentLog::open(&dir.0, 1 << 20).unwrap().log;
    append_range(&mut log, 1, 4);
    drop(log);
    let file = segment_files(&dir.0).pop().unwrap();
    let original = fs::read(&file).unwrap();

    let mut newer = original.clone();
    newer[8] = 9;
    fs::write(&file, &newer).unwrap();
    let err = SegmentLog::open(&dir.0, 1 << 20).unwrap_err();
    assert!(
        matches!(
            err,
            DiskError::Version {
                got: 9,
                reads: 1,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(fs::read(&file).unwrap(), newer, "the file is not touched");

    fs::write(&file, b"not a segment at all, but long enough for a header").unwrap();
    let err = SegmentLog::open(&dir.0, 1 << 20).unwrap_err();
    assert!(matches!(err, DiskError::Foreign { .. }), "{err}");
    assert!(err.to_string().contains("not a log segment"), "{err}");

    fs::write(&file, &original).unwrap();
    fs::write(dir.0.join("notes.seg"), b"x").unwrap();
    let err = SegmentLog::open(&dir.0, 1 << 20).unwrap_err();
    assert!(matches!(err, DiskError::Foreign { .. }), "{err}");
}

#[test]
fn truncation_removes_a_suffix_across_segments_durably() {
    let dir = TempDir::new();
    let mut log = SegmentLog::open(&dir.0, 300).unwrap().log;
    append_range(&mut log, 1, 61);
    let before = log.segment_count();
    log.truncate_from(12).unwrap();
    assert!(log.segment_count() < before);
    assert_eq!(log.last_index(), Some(11));
    // The suffix is replaced by other entries, as Raft does after a conflict.
    log.append(&[(12, b"replaced"), (13, b"too")]).unwrap();
    drop(log);
    let again = SegmentLog::open(&dir.0, 300).unwrap();
    assert_eq!(again.cut, None);
    assert_eq!(indexes(&again.entries), (1..14).collect::<Vec<_>>());
    assert_eq!(again.entries[11].1, b"replaced");
}

#[test]
fn an_append_after_a_cut_inside_the_segment_lands_where_the_cut_is() {
    let dir = TempDir::new();
    let mut log = SegmentLog::open(&dir.0, 1 << 20).unwrap().log;
    append_range(&mut log, 1, 11);
    log.truncate_from(5).unwrap();
    log.append(&[(5, b"five again"), (6, b"six again")])
        .unwrap();
    log.sync().unwrap();
    drop(log);
    let again = SegmentLog::open(&dir.0, 1 << 20).unwrap();
    assert_eq!(again.cut, None);
    assert_eq!(indexes(&again.entries), (1..7).collect::<Vec<_>>());
    assert_eq!(again.entries[4].1, b"five again");
}

#[test]
fn a_batch_with_a_gap_is_refused_whole() {
    let dir = TempDir::new();
    let mut log = SegmentLog::open(&dir.0, 1 << 20).unwrap().log;
    append_range(&mut log, 1, 11);
    let err = log
        .append(&[(11, b"a"), (12, b"b"), (14, b"d")])
        .unwrap_err();
    assert!(
        matches!(err, DiskError::NotNext { last: 12, got: 14 }),
        "{err}"
    );
    assert_eq!(log.last_index(), Some(10));
    append_range(&mut log, 11, 13);
    drop(log);
    assert_eq!(
        indexes(&SegmentLog::open(&dir.0, 1 << 20).unwrap().entries),
        (1..13).collect::<Vec<_>>()
    );
}

#[test]
fn truncation_to_nothing_leaves_an_empty_log_that_takes_the_same_index() {
    let dir = TempDir::new();
    let mut log = SegmentLog::open(&dir.0, 300).unwrap().log;
    append_range(&mut log, 1, 30);
    log.truncate_from(1).unwrap();
    assert_eq!(log.last_index(), None);
    assert_eq!(segment_files(&dir.0).len(), 0);
    append_range(&mut log, 1, 3);
    drop(log);
    assert_eq!(
        indexes(&SegmentLog::open(&dir.0, 300).unwrap().entries),
        vec![1, 2]
    );
}

#[test]
fn purging_removes_whole_segments_only_and_the_log_goes_on() {
    let dir = TempDir::new();
    let mut log = SegmentLog::open(&dir.0, 300).unwrap().log;
    append_range(&mut log, 1, 61);
    let before = log.segment_count();
    log.purge_through(30).unwrap();
    assert!(log.segment_count() < before);
    drop(log);
    let again = SegmentLog::open(&dir.0, 300).unwrap();
    assert_eq!(again.cut, None);
    let first = again.entries[0].0;
    assert!(first > 1 && first <= 31, "first kept entry {first}");
    assert_eq!(again.entries.last().map(|e| e.0), Some(60));

    // A snapshot past the whole log purges everything; appends resume after it.
    let mut log = again.log;
    log.purge_through(100).unwrap();
    assert_eq!(log.segment_count(), 0);
    assert!(matches!(
        log.append(&[(61, b"old")]),
        Err(DiskError::NotNext { last: 100, got: 61 })
    ));
    append_range(&mut log, 101, 104);
    drop(log);
    assert_eq!(
        indexes(&SegmentLog::open(&dir.0, 300).unwrap().entries),
        vec![101, 102, 103]
    );
}

/// A small tmpfs mounted for one test (root, as the suite runs), unmounted when dropped.
struct SmallDisk(TempDir);

impl SmallDisk {
    fn mount(bytes: u64) -> Self {
        let dir = TempDir::new();
        fs::create_dir_all(&dir.0).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(&dir.0)
            .status()
            .expect("mount runs");
        assert!(status.success(), "mounting a tmpfs needs root: {status}");
        Self(dir)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(&self.0 .0)
            .status();
    }
}

#[test]
fn a_full_disk_fails_the_append_and_damages_nothing_written_before() {
    let disk = SmallDisk::mount(256 * 1024);
    let dir = disk.0 .0.join("log");
    let mut log = SegmentLog::open(&dir, 64 * 1024).unwrap().log;
    let value = vec![0xabu8; 3000];
    let mut written = 0u64;
    let err = loop {
        assert!(
            written < 1000,
            "a 256 KiB disk took {written} entries of 3 KB"
        );
        match log.append(&[(written + 1, &value)]) {
            Ok(()) => written += 1,
            Err(e) => break e,
        }
    };
    assert!(
        matches!(&err, DiskError::Io { source, .. } if source.kind() == io::ErrorKind::StorageFull),
        "{err}"
    );
    assert!(written > 10, "only {written} entries fit");
    // The same append fails again, the log is unchanged, and nothing before is lost.
    assert!(log.append(&[(written + 1, &value)]).is_err());
    assert_eq!(log.last_index(), Some(written));
    // Once a purge frees room, appends go on after the last entry.
    log.purge_through(written / 2).unwrap();
    log.append(&[(written + 1, &value)]).unwrap();
    written += 1;
    log.sync().unwrap();
    drop(log);
    let again = SegmentLog::open(&dir, 64 * 1024).unwrap();
    assert_eq!(again.cut, None, "a failed append left no partial record");
    let first = again.entries[0].0;
    assert!(first > 1, "the purge removed the first segments");
    assert_eq!(
        indexes(&again.entries),
        (first..=written).collect::<Vec<_>>()
    );
    assert!(again.entries.iter().all(|(_, p)| p == &value));
}
