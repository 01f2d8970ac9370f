//! Training for attn: token shards on disk, seeded batch sampling, the
//! optimizer over the flat parameter buffer, the training loop with warmup and
//! cosine decay, metrics, loss curves, and exactly resumable checkpoints.

pub mod optim;
