use super::*;
use grid_proto::{ObjKey, Timeout};

/// A file of its own, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        Self(std::env::temp_dir().join(format!("grid-backup-{}-{name}", std::process::id())))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn objects(p: u32) -> Vec<BackupObject> {
    (0..3)
        .map(|i| BackupObject {
            obj: ObjKey::new("sessions", format!("p{p}-k{i}")),
            value: format!("value {p} {i}").into_bytes(),
            timeout: Timeout::Absolute { ms: 60_000 },
            left_ms: Some(1_000 * i),
            tags: (0..i).map(|t| format!("tag{t}")).collect(),
        })
        .collect()
}

/// A file of format 1 (objects without tags), as the release before tags wrote it.
fn write_v1(path: &Path, objects: &[BackupObjectV1]) {
    let mut file = Vec::new();
    let mut header = MAGIC.to_vec();
    header.extend_from_slice(&VERSION_1.to_le_bytes());
    header.extend_from_slice(&1_700_000_000_000u64.to_le_bytes());
    header.extend_from_slice(&1u32.to_le_bytes());
    let sum = xxh3_64(&header);
    file.extend_from_slice(&header);
    file.extend_from_slice(&sum.to_le_bytes());
    let body = grid_proto::msg::encode(&objects.to_vec());
    let mut section = SECTION.to_vec();
    section.extend_from_slice(&0u32.to_le_bytes());
    section.extend_from_slice(&(objects.len() as u64).to_le_bytes());
    section.extend_from_slice(&(body.len() as u64).to_le_bytes());
    section.extend_from_slice(&body);
    let sum = xxh3_64(&section);
    file.extend_from_slice(&section);
    file.extend_from_slice(&sum.to_le_bytes());
    file.extend_from_slice(END);
    file.extend_from_slice(&1u32.to_le_bytes());
    let sum = xxh3_64(&file);
    file.extend_from_slice(&sum.to_le_bytes());
    std::fs::write(path, file).unwrap();
}

#[test]
fn a_backup_of_format_1_reads_as_objects_without_tags() {
    let file = Scratch::new("v1");
    let old = BackupObjectV1 {
        obj: ObjKey::new("sessions", "k"),
        value: b"v".to_vec(),
        timeout: Timeout::None,
        left_ms: None,
    };
    write_v1(&file.0, std::slice::from_ref(&old));
    let (_, sections) = read_all(&file.0).unwrap();
    assert_eq!(sections, vec![(0, vec![BackupObject::from(old)])]);
}

fn write(path: &Path, partitions: u32) {
    let header = BackupHeader {
        created_ms: 1_700_000_000_000,
        partitions,
    };
    let mut w = BackupWriter::create(path, header).unwrap();
    for p in 0..partitions {
        w.partition(p, &objects(p)).unwrap();
    }
    w.finish().unwrap();
}

/// A partition's section.
type Section = (u32, Vec<BackupObject>);

fn read_all(path: &Path) -> Result<(BackupHeader, Vec<Section>), BackupFileError> {
    let mut r = BackupReader::open(path)?;
    let mut out = Vec::new();
    while let Some(section) = r.next_partition()? {
        out.push(section);
    }
    Ok((r.header(), out))
}

#[test]
fn a_backup_reads_back_as_written() {
    let file = Scratch::new("round");
    write(&file.0, 3);
    let (header, sections) = read_all(&file.0).unwrap();
    assert_eq!(header.partitions, 3);
    assert_eq!(header.created_ms, 1_700_000_000_000);
    assert_eq!(
        sections,
        (0..3).map(|p| (p, objects(p))).collect::<Vec<_>>()
    );
}

#[test]
fn every_flipped_byte_and_every_cut_is_refused() {
    let file = Scratch::new("damage");
    write(&file.0, 2);
    let good = std::fs::read(&file.0).unwrap();
    let bad = Scratch::new("damage-bad");
    for at in 0..good.len() {
        let mut bytes = good.clone();
        bytes[at] ^= 0x01;
        std::fs::write(&bad.0, &bytes).unwrap();
        assert!(
            read_all(&bad.0).is_err(),
            "a flipped byte at {at} went unnoticed"
        );
    }
    for len in 0..good.len() {
        std::fs::write(&bad.0, &good[..len]).unwrap();
        assert!(
            read_all(&bad.0).is_err(),
            "a file cut at {len} went unnoticed"
        );
    }
    let mut longer = good.clone();
    longer.push(0);
    std::fs::write(&bad.0, &longer).unwrap();
    assert!(read_all(&bad.0).is_err(), "bytes after the end");
}

#[test]
fn a_foreign_file_or_another_version_is_named_as_such() {
    let file = Scratch::new("foreign");
    std::fs::write(&file.0, b"{\"sessions\": []}").unwrap();
    let err = read_all(&file.0).unwrap_err();
    assert!(matches!(err, BackupFileError::Foreign { .. }), "{err}");
    assert!(err.to_string().contains("is not a grid backup"), "{err}");
    write(&file.0, 1);
    let mut bytes = std::fs::read(&file.0).unwrap();
    bytes[10] = 9;
    std::fs::write(&file.0, &bytes).unwrap();
    let err = read_all(&file.0).unwrap_err();
    assert!(
        matches!(err, BackupFileError::Version { got: 9, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("backup format 9"), "{err}");
}
