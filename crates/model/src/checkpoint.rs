//! Checkpoints as Hugging Face folders: `config.json` + `model.safetensors`.
//!
//! Every file is written to `NAME.tmp` and renamed into place, so a reader (or
//! a crash) never sees half a file.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

pub use safetensors::tensor::Dtype;
use safetensors::tensor::TensorView;
use safetensors::SafeTensors;

use crate::error::{io_err, ModelError, Result};

/// A model folder's configuration file.
pub const CONFIG_FILE: &str = "config.json";
/// A model folder's weights file (unsharded).
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// Writes `bytes` to `path` atomically: temp file in the same folder, fsync, rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = tmp_path(path);
    let written = fs::File::create(&tmp).and_then(|mut f| {
        std::io::Write::write_all(&mut f, bytes)?;
        f.sync_all()
    });
    let result = written.and_then(|_| fs::rename(&tmp, path));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Where `write_atomic` stages `path`: the same name with `.tmp` added.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Named f32 tensors to safetensors, written atomically. `metadata` lands in
/// the header's `__metadata__` map.
pub fn save_tensors(path: &Path, tensors: &[(&str, Vec<usize>, &[f32])], metadata: Option<HashMap<String, String>>) -> Result<()> {
    let raw: Vec<RawTensor> = tensors.iter().map(|(n, shape, data)| (n.to_string(), Dtype::F32, shape.clone(), bytemuck::cast_slice(data).to_vec())).collect();
    save_raw(path, &raw, metadata)
}

/// A tensor as bytes: name, dtype, shape, little-endian data.
pub type RawTensor = (String, Dtype, Vec<usize>, Vec<u8>);

/// Tensors of any dtype to safetensors, written atomically.
pub fn save_raw(path: &Path, tensors: &[RawTensor], metadata: Option<HashMap<String, String>>) -> Result<()> {
    if cfg!(target_endian = "big") {
        return Err(ModelError::InvalidConfig("safetensors output needs a little-endian host".into()));
    }
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(name, dtype, shape, data)| {
            let view = TensorView::new(*dtype, shape.clone(), data).map_err(|e| ModelError::Safetensors { path: path.to_path_buf(), detail: e.to_string() })?;
            Ok((name.to_string(), view))
        })
        .collect::<Result<_>>()?;
    let tmp = tmp_path(path);
    let written = safetensors::serialize_to_file(views, &metadata, &tmp)
        .map_err(|e| match e {
            // A full disk is an I/O error about the file being written, not a bad file.
            safetensors::SafeTensorError::IoError(err) => ModelError::Io { path: tmp.clone(), err },
            e => ModelError::Safetensors { path: tmp.clone(), detail: e.to_string() },
        })
        .and_then(|_| fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(io_err(&tmp)))
        .and_then(|_| fs::rename(&tmp, path).map_err(io_err(path)));
    if written.is_err() {
        // No temporary file is left behind, whatever failed.
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// A memory-mapped safetensors file, with errors that name the file. The
/// header is parsed and validated once, at `open`; lookups use its index.
/// Reading a tensor widens it into the caller's f32 buffer and then drops the
/// file's pages for it, so a loader never holds the file and its f32 copy
/// together for longer than one tensor.
pub struct TensorFile {
    /// The file, for error messages.
    pub path: PathBuf,
    bytes: memmap2::Mmap,
    /// name -> (dtype, shape, byte range in `bytes`)
    index: HashMap<String, (Dtype, Vec<usize>, std::ops::Range<usize>)>,
    metadata: HashMap<String, String>,
}

impl TensorFile {
    /// Maps `path` and checks its header (a broken file is a typed error).
    pub fn open(path: &Path) -> Result<Self> {
        let file = fs::File::open(path).map_err(io_err(path))?;
        // SAFETY: attn replaces files by rename and never writes into one in
        // place; a file truncated by another program while mapped could fault,
        // which is the usual caveat of memory-mapped reading.
        let bytes = unsafe { memmap2::Mmap::map(&file) }.map_err(io_err(path))?;
        let bad = |e: safetensors::SafeTensorError| ModelError::Safetensors { path: path.to_path_buf(), detail: e.to_string() };
        let st = SafeTensors::deserialize(&bytes).map_err(bad)?;
        let base = bytes.as_ptr() as usize;
        let index = st
            .tensors()
            .into_iter()
            .map(|(name, t)| {
                let start = t.data().as_ptr() as usize - base;
                (name, (t.dtype(), t.shape().to_vec(), start..start + t.data().len()))
            })
            .collect();
        let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(bad)?;
        let metadata = meta.metadata().clone().unwrap_or_default();
        Ok(TensorFile { path: path.to_path_buf(), bytes, index, metadata })
    }

    /// The header's `__metadata__` strings.
    pub fn metadata(&self) -> Result<HashMap<String, String>> {
        Ok(self.metadata.clone())
    }

    fn entry(&self, name: &str) -> Result<&(Dtype, Vec<usize>, std::ops::Range<usize>)> {
        self.index.get(name).ok_or_else(|| ModelError::MissingTensor { path: self.path.clone(), name: name.into() })
    }

    /// Copies tensor `name` into `out`, checking its shape; F16 and BF16 are
    /// widened to f32.
    pub fn read_into(&self, name: &str, expected: &[usize], out: &mut [f32]) -> Result<()> {
        self.read_part_into(name, expected, 0, out)
    }

    /// Copies the `out.len()` values of tensor `name` (of shape `expected`)
    /// that start at value `start` into `out`: a block of rows, so that a
    /// large tensor can be converted a piece at a time.
    pub fn read_part_into(&self, name: &str, expected: &[usize], start: usize, out: &mut [f32]) -> Result<()> {
        let (dtype, shape, range) = self.entry(name)?;
        if shape != expected {
            return Err(ModelError::ShapeMismatch { path: self.path.clone(), name: name.into(), found: shape.clone(), expected: expected.to_vec() });
        }
        let size = match dtype {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::BF16 => 2,
            d => return Err(ModelError::DType { path: self.path.clone(), name: name.into(), dtype: format!("{d:?}") }),
        };
        let n: usize = shape.iter().product();
        assert!(start + out.len() <= n, "a part inside the tensor");
        let range = range.start + start * size..range.start + (start + out.len()) * size;
        let data = &self.bytes[range.clone()];
        match dtype {
            Dtype::F32 => out.iter_mut().zip(data.chunks_exact(4)).for_each(|(o, b)| *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            Dtype::F16 => out.iter_mut().zip(data.chunks_exact(2)).for_each(|(o, b)| *o = half::f16::from_le_bytes([b[0], b[1]]).to_f32()),
            Dtype::BF16 => out.iter_mut().zip(data.chunks_exact(2)).for_each(|(o, b)| *o = half::bf16::from_le_bytes([b[0], b[1]]).to_f32()),
            d => return Err(ModelError::DType { path: self.path.clone(), name: name.into(), dtype: format!("{d:?}") }),
        }
        self.release(range.clone());
        Ok(())
    }

    /// Tells the kernel the pages of `range` are no longer needed, so that they
    /// leave this process's resident memory (they stay in the page cache).
    fn release(&self, range: std::ops::Range<usize>) {
        #[cfg(unix)]
        {
            // Only whole pages inside the range: a neighbour's pages may still be read.
            let page = 4096;
            let start = range.start.next_multiple_of(page);
            let end = range.end / page * page;
            if end > start {
                // SAFETY: the mapping is private and read-only; dropped pages are
                // re-read from the file if touched again.
                let _ = unsafe { self.bytes.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start) };
            }
        }
        #[cfg(not(unix))]
        let _ = range;
    }

    /// Names of every tensor in the file.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }

    /// Shape of tensor `name`.
    pub fn shape(&self, name: &str) -> Result<Vec<usize>> {
        Ok(self.entry(name)?.1.clone())
    }

    /// A whole float tensor as f32, whatever its shape.
    pub fn read_f32(&self, name: &str) -> Result<Vec<f32>> {
        let shape = self.shape(name)?;
        let mut out = vec![0.0; shape.iter().product()];
        self.read_into(name, &shape, &mut out)?;
        Ok(out)
    }

    /// The stored type of tensor `name`.
    pub fn dtype(&self, name: &str) -> Result<Dtype> {
        Ok(self.entry(name)?.0)
    }

    /// An I8 tensor of shape `expected`.
    pub fn read_i8(&self, name: &str, expected: &[usize]) -> Result<Vec<i8>> {
        let (dtype, shape, range) = self.entry(name)?;
        if shape != expected {
            return Err(ModelError::ShapeMismatch { path: self.path.clone(), name: name.into(), found: shape.clone(), expected: expected.to_vec() });
        }
        if *dtype != Dtype::I8 {
            return Err(ModelError::DType { path: self.path.clone(), name: name.into(), dtype: format!("{dtype:?} (int8 weights must be I8)") });
        }
        let out = self.bytes[range.clone()].iter().map(|&b| b as i8).collect();
        self.release(range.clone());
        Ok(out)
    }

    /// An integer tensor (I32, I64 or U32) as token ids.
    pub fn read_ids(&self, name: &str) -> Result<Vec<u32>> {
        let (dtype, _, range) = self.entry(name)?;
        let d = &self.bytes[range.clone()];
        Ok(match dtype {
            Dtype::I32 | Dtype::U32 => d.chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            Dtype::I64 => d.chunks_exact(8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as u32).collect(),
            other => return Err(ModelError::DType { path: self.path.clone(), name: name.into(), dtype: format!("{other:?}") }),
        })
    }

    /// Whether tensor `name` is there.
    pub fn has(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }
}

/// The weights of a model folder: `model.safetensors`, or the shards that
/// `model.safetensors.index.json` lists (as `save_pretrained` writes large
/// models), read as one set of named tensors.
pub struct Weights {
    files: Vec<TensorFile>,
    /// tensor name -> index in `files`
    map: HashMap<String, usize>,
}

impl Weights {
    /// The weights of folder `dir`, sharded or not.
    pub fn open_dir(dir: &Path) -> Result<Self> {
        let index_path = dir.join("model.safetensors.index.json");
        if index_path.exists() {
            let text = fs::read_to_string(&index_path).map_err(io_err(&index_path))?;
            let json: serde_json::Value = serde_json::from_str(&text).map_err(|err| ModelError::Json { path: index_path.clone(), err })?;
            let wm = json["weight_map"].as_object().ok_or_else(|| ModelError::InvalidConfig(format!("{}: no \"weight_map\" object", index_path.display())))?;
            let mut shards: Vec<String> = wm.values().filter_map(|v| v.as_str().map(str::to_string)).collect();
            shards.sort();
            shards.dedup();
            let files = shards.iter().map(|f| TensorFile::open(&dir.join(f))).collect::<Result<Vec<_>>>()?;
            let mut map = HashMap::new();
            for (name, f) in wm {
                let i = shards.iter().position(|s| Some(s.as_str()) == f.as_str()).expect("listed above");
                if !files[i].has(name) {
                    return Err(ModelError::MissingTensor { path: files[i].path.clone(), name: format!("{name} (listed in {})", index_path.display()) });
                }
                map.insert(name.clone(), i);
            }
            return Ok(Weights { files, map });
        }
        let path = dir.join(WEIGHTS_FILE);
        if !path.exists() && dir.join("pytorch_model.bin").exists() {
            return Err(ModelError::Unsupported {
                path: dir.join("pytorch_model.bin"),
                field: "weights format".into(),
                value: "pickle".into(),
                hint: "attn reads safetensors only; convert with `transformers` (save_pretrained(dir, safe_serialization=True))".into(),
            });
        }
        let file = TensorFile::open(&path)?;
        let map = file.index.keys().map(|k| (k.clone(), 0)).collect();
        Ok(Weights { files: vec![file], map })
    }

    fn file(&self, name: &str) -> Result<&TensorFile> {
        match self.map.get(name) {
            Some(&i) => Ok(&self.files[i]),
            None => Err(ModelError::MissingTensor { path: self.files[0].path.clone(), name: name.into() }),
        }
    }

    /// Whether tensor `name` is there.
    pub fn has(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    /// Names of every tensor in the folder.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.map.keys().map(String::as_str)
    }

    /// `TensorFile::read_into` on the shard that holds `name`.
    pub fn read_into(&self, name: &str, expected: &[usize], out: &mut [f32]) -> Result<()> {
        self.file(name)?.read_into(name, expected, out)
    }

    /// `TensorFile::read_part_into` on the shard that holds `name`.
    pub fn read_part_into(&self, name: &str, expected: &[usize], start: usize, out: &mut [f32]) -> Result<()> {
        self.file(name)?.read_part_into(name, expected, start, out)
    }

    /// Shape of tensor `name`.
    pub fn shape(&self, name: &str) -> Result<Vec<usize>> {
        self.file(name)?.shape(name)
    }

    /// The stored type of tensor `name`.
    pub fn dtype(&self, name: &str) -> Result<Dtype> {
        self.file(name)?.dtype(name)
    }

    /// An I8 tensor of shape `shape`.
    pub fn read_i8(&self, name: &str, shape: &[usize]) -> Result<Vec<i8>> {
        self.file(name)?.read_i8(name, shape)
    }

    /// The file that holds `name`, for error messages.
    pub fn path_of(&self, name: &str) -> PathBuf {
        self.file(name).map(|f| f.path.clone()).unwrap_or_else(|_| self.files[0].path.clone())
    }

    /// Reads `name` with `shape` into a new vector.
    pub fn read(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let mut v = vec![0.0; shape.iter().product()];
        self.read_into(name, shape, &mut v)?;
        Ok(v)
    }

    /// The first file's metadata (attn's training metadata lives there).
    pub fn metadata(&self) -> Result<HashMap<String, String>> {
        self.files[0].metadata()
    }
}

/// Refuses a weights file with a non-finite value in tensor `name`.
pub(crate) fn check_finite(dir: &Path, name: &str, values: &[f32]) -> Result<()> {
    match values.iter().position(|x| !x.is_finite()) {
        Some(i) => Err(ModelError::NonFinite { path: dir.to_path_buf(), name: name.into(), index: i, value: values[i] }),
        None => Ok(()),
    }
}

/// Refuses tensors the config did not ask for (other than the known extras):
/// they mean config.json does not describe the checkpoint.
pub(crate) fn refuse_unused(dir: &Path, w: &Weights, used: &std::collections::HashSet<String>, extra: impl Fn(&str) -> bool) -> Result<()> {
    let mut unused: Vec<&str> = w.names().filter(|n| !used.contains(*n) && !extra(n)).collect();
    if unused.is_empty() {
        return Ok(());
    }
    unused.sort_unstable();
    let shown: Vec<_> = unused.iter().take(8).collect();
    Err(ModelError::UnusedTensors { path: dir.to_path_buf(), count: unused.len(), names: format!("{shown:?}{}", if unused.len() > 8 { " ..." } else { "" }) })
}

/// Writes a config.json into `dir` (created if needed), atomically.
pub(crate) fn save_config_json(dir: &Path, config: &serde_json::Value) -> Result<()> {
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let path = dir.join(CONFIG_FILE);
    let json = serde_json::to_string_pretty(config).expect("serializes");
    write_atomic(&path, json.as_bytes()).map_err(io_err(&path))
}

/// Writes every tensor of `layout` from the flat `params` as safetensors, atomically.
pub(crate) fn save_layout(path: &Path, layout: &crate::params::ParamLayout, params: &[f32], metadata: Option<HashMap<String, String>>) -> Result<()> {
    let tensors: Vec<_> = layout.entries.iter().map(|e| (e.name.as_str(), e.shape.clone(), &params[e.range()])).collect();
    let mut meta = metadata.unwrap_or_default();
    meta.insert("format".into(), "pt".into());
    save_tensors(path, &tensors, Some(meta))
}
