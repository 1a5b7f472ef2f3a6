//! Snapshots of the state machine: a RocksDB checkpoint (hard links to the
//! immutable SST files plus a flushed copy of the rest — consistent and
//! cheap), packed into one file so it can be streamed.
//!
//! Packed format, all integers big-endian:
//! `b"KEELSNAP" u32:version` then per file `u32:name_len name u64:len bytes`,
//! then `u32:0` and a CRC32 of everything before it.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use keelson_mvcc::Store;

const MAGIC: &[u8; 8] = b"KEELSNAP";
const VERSION: u32 = 1;

/// A packed snapshot on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFile {
    pub path: PathBuf,
}

/// Takes a consistent checkpoint of `store` into the new directory `dir`.
pub fn checkpoint(store: &Store, dir: &Path) -> io::Result<()> {
    let cp = rocksdb::checkpoint::Checkpoint::new(store.db()).map_err(io::Error::other)?;
    cp.create_checkpoint(dir).map_err(io::Error::other)
}

/// Packs every file of directory `dir` (flat, as a checkpoint is) into `out`.
pub fn pack(dir: &Path, out: &Path) -> io::Result<u64> {
    let mut w = CrcWriter { inner: BufWriter::new(File::create(out)?), crc: crc32fast::Hasher::new() };
    w.write_all(MAGIC)?;
    w.write_all(&VERSION.to_be_bytes())?;
    let mut names: Vec<_> = fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
        .map(|e| e.file_name())
        .collect();
    names.sort();
    for name in names {
        let name_bytes = name.to_string_lossy().into_owned().into_bytes();
        let mut f = File::open(dir.join(&name))?;
        let len = f.metadata()?.len();
        w.write_all(&(name_bytes.len() as u32).to_be_bytes())?;
        w.write_all(&name_bytes)?;
        w.write_all(&len.to_be_bytes())?;
        let copied = io::copy(&mut (&mut f).take(len), &mut w)?;
        if copied != len {
            return Err(io::Error::other(format!("{} changed while packing", name.to_string_lossy())));
        }
    }
    w.write_all(&0u32.to_be_bytes())?;
    let crc = w.crc.clone().finalize();
    let mut inner = w.inner;
    inner.write_all(&crc.to_be_bytes())?;
    let file = inner.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    file.metadata().map(|m| m.len())
}

/// Unpacks a packed snapshot into the new directory `dir`, checking its CRC.
pub fn unpack(file: &Path, dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let mut r = CrcReader { inner: BufReader::new(File::open(file)?), crc: crc32fast::Hasher::new() };
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic)?;
    if &magic != MAGIC || read_u32(&mut r)? != VERSION {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "not a keelson snapshot"));
    }
    loop {
        let name_len = read_u32(&mut r)? as usize;
        if name_len == 0 {
            break;
        }
        let mut name = vec![0u8; name_len];
        r.read_exact(&mut name)?;
        let name = String::from_utf8(name).map_err(|_| bad("snapshot file name"))?;
        if name.contains('/') || name == ".." {
            return Err(bad("snapshot file name"));
        }
        let mut len = [0u8; 8];
        r.read_exact(&mut len)?;
        let len = u64::from_be_bytes(len);
        let mut out = File::create(dir.join(&name))?;
        if io::copy(&mut (&mut r).take(len), &mut out)? != len {
            return Err(bad("truncated snapshot"));
        }
        out.sync_all()?;
    }
    let expect = r.crc.clone().finalize();
    let mut crc = [0u8; 4];
    r.inner.read_exact(&mut crc)?;
    if u32::from_be_bytes(crc) != expect {
        return Err(bad("snapshot checksum mismatch"));
    }
    Ok(())
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

fn read_u32(r: &mut impl Read) -> io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_be_bytes(b))
}

struct CrcWriter<W> {
    inner: W,
    crc: crc32fast::Hasher,
}

impl<W: Write> Write for CrcWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

struct CrcReader<R> {
    inner: R,
    crc: crc32fast::Hasher,
}

impl<R: Read> Read for CrcReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_unpack_round_trips_and_detects_damage() {
        let src = tempfile::tempdir().unwrap();
        fs::write(src.path().join("a.sst"), b"hello").unwrap();
        fs::write(src.path().join("MANIFEST"), vec![7u8; 10_000]).unwrap();
        let out = tempfile::tempdir().unwrap();
        let packed = out.path().join("snap");
        pack(src.path(), &packed).unwrap();
        let dst = out.path().join("unpacked");
        unpack(&packed, &dst).unwrap();
        assert_eq!(fs::read(dst.join("a.sst")).unwrap(), b"hello");
        assert_eq!(fs::read(dst.join("MANIFEST")).unwrap().len(), 10_000);

        let mut bytes = fs::read(&packed).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 1;
        fs::write(&packed, bytes).unwrap();
        assert!(unpack(&packed, &out.path().join("again")).is_err());
    }
}
