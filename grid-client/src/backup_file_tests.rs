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
        })
        .collect()
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
