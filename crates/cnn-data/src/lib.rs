//! cnn-data: image data for CNN training, as host arrays; knows nothing of networks.
//!
//! [`open`] a [`DataSpec`] (class folders, CIFAR-10, IDX, hub cache, synthetic) to get a
//! [`Dataset`] of train/test [`Split`]s, then build a [`Loader`] over a split with a
//! [`LoaderConfig`] and iterate [`Loader::epoch`] for [`Batch`]es (`N x 3 x H x W` f32).
//! Transforms follow torchvision; every random choice derives from (seed, epoch, index).

mod batch;
mod cache;
mod dataset;
mod decode;
mod error;
mod heatmap;
mod loader;
mod normalise;
mod photo;
mod resize;
mod rgb;
mod rng;
mod source;
mod spec;
pub mod synthetic;
mod transform;

pub use batch::Batch;
pub use cache::DecodeCache;
pub use dataset::{ClassInfo, Dataset, Origin, Sample, Skipped, Split};
pub use decode::{decode_bytes, decode_file, probe_file, MAX_DECODE_BYTES, MAX_SIDE};
pub use error::DataError;
pub use heatmap::{jet, overlay_heatmap, save_png, Enlarge, Grid};
pub use loader::{Epoch, LastBatch, Loader, LoaderConfig, Order};
pub use normalise::{normalise, Normalise, IMAGENET_MEAN, IMAGENET_STD};
pub use photo::load_image;
pub use resize::{resize_bilinear, resize_shorter};
pub use rgb::Rgb8;
pub use source::cifar::CIFAR10_CLASSES;
pub use source::folder::LABELS_FILE;
pub use source::hub::{hub_cache_dir, hub_file};
pub use source::idx::FASHION_MNIST_CLASSES;
pub use spec::{
    open, BadFilePolicy, Check, DataSpec, FolderOptions, PerClass, SplitRule, SyntheticSpec,
};
pub use transform::{centre_crop, hflip, Augment, Transform, RRC_RATIO, RRC_SCALE};
