//! Data sources: each turns a location into a [`crate::Dataset`] (file lists or pixels, labels, splits).

pub(crate) mod cifar;
pub(crate) mod folder;
pub(crate) mod hub;
pub(crate) mod idx;
pub(crate) mod split;
