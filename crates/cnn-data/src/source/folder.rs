//! Class-folder datasets: `ROOT/<class>/*` (split by seed) or `ROOT/train|test|val/<class>/*`.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::dataset::{ClassInfo, Dataset, Origin, Sample, Skipped, Split};
use crate::decode::{decode_file, format_from_extension, probe_file};
use crate::error::DataError;
use crate::source::split::{check_ratio, stratified};
use crate::spec::{BadFilePolicy, Check, FolderOptions};

/// Optional display-name table in the dataset root: `folder<TAB>name` per line.
pub const LABELS_FILE: &str = "LABELS.tsv";

fn is_hidden(name: &str) -> bool {
    name.starts_with('.')
}

/// Non-hidden sub-directories of `dir`, sorted by name (symlinks followed).
fn subdirs(dir: &Path) -> Result<Vec<(String, PathBuf)>, DataError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| DataError::path(dir, e))? {
        let entry = entry.map_err(|e| DataError::path(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if !is_hidden(&name) && path.is_dir() {
            out.push((name, path));
        }
    }
    out.sort();
    Ok(out)
}

/// Every file under `dir` (recursively, sorted, symlinks followed) that has an image
/// extension; counts hidden entries and other files in `ignored`.
fn image_files(dir: &Path, ignored: &mut usize) -> Result<Vec<PathBuf>, DataError> {
    let mut entries: Vec<(String, PathBuf)> = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| DataError::path(dir, e))? {
        let entry = entry.map_err(|e| DataError::path(dir, e))?;
        entries.push((
            entry.file_name().to_string_lossy().into_owned(),
            entry.path(),
        ));
    }
    entries.sort();
    let mut files = Vec::new();
    for (name, path) in entries {
        if is_hidden(&name) {
            *ignored += 1;
        } else if path.is_dir() {
            files.extend(image_files(&path, ignored)?);
        } else if format_from_extension(&path).is_some() {
            files.push(path);
        } else {
            *ignored += 1;
        }
    }
    Ok(files)
}

/// Reads `ROOT/LABELS.tsv` if present.
fn read_labels(root: &Path) -> Result<HashMap<String, String>, DataError> {
    let path = root.join(LABELS_FILE);
    let mut map = HashMap::new();
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(map),
        Err(e) => return Err(DataError::format(&path, e.to_string())),
    };
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        match line.split_once('\t') {
            Some((folder, name)) if !folder.is_empty() && !name.trim().is_empty() => {
                map.insert(folder.to_string(), name.trim().to_string());
            }
            _ => {
                return Err(DataError::format(
                    &path,
                    format!("line {}: expected `folder<TAB>name`, got {line:?}", i + 1),
                ))
            }
        }
    }
    Ok(map)
}

/// Checks the files of one class; returns the good ones, records or fails on bad ones.
fn check_files(
    files: Vec<PathBuf>,
    options: &FolderOptions,
    skipped: &mut Vec<Skipped>,
) -> Result<Vec<PathBuf>, DataError> {
    let results: Vec<Result<(), DataError>> = files
        .par_iter()
        .map(|p| match options.check {
            Check::Header => probe_file(p).map(|_| ()),
            Check::Decode => decode_file(p).map(|_| ()),
        })
        .collect();
    let mut good = Vec::with_capacity(files.len());
    for (path, result) in files.into_iter().zip(results) {
        match (result, options.bad_files) {
            (Ok(()), _) => good.push(path),
            (Err(e), BadFilePolicy::Fail) => return Err(e),
            (Err(e), BadFilePolicy::Skip) => skipped.push(Skipped {
                reason: match e {
                    DataError::BadFile { what, .. } => what,
                    other => other.to_string(),
                },
                path,
            }),
        }
    }
    Ok(good)
}

/// Scans `dir/<class>/...` for the given classes. A class folder missing from `dir` is an
/// error when `required`; an existing folder with no usable image always is.
fn scan_classes(
    dir: &Path,
    classes: &[ClassInfo],
    required: bool,
    options: &FolderOptions,
    skipped: &mut Vec<Skipped>,
    ignored: &mut usize,
) -> Result<Vec<Vec<Sample>>, DataError> {
    let mut by_class = Vec::with_capacity(classes.len());
    for (label, class) in classes.iter().enumerate() {
        let class_dir = dir.join(&class.folder);
        if !class_dir.is_dir() {
            if required {
                return Err(DataError::layout(
                    dir,
                    format!("class folder {:?} is missing", class.folder),
                ));
            }
            by_class.push(Vec::new());
            continue;
        }
        let mut class_ignored = 0;
        let files = image_files(&class_dir, &mut class_ignored)?;
        *ignored += class_ignored;
        let found = files.len();
        let before = skipped.len();
        let good = check_files(files, options, skipped)?;
        if good.is_empty() {
            return Err(DataError::layout(
                &class_dir,
                format!(
                    "class folder has no usable images ({found} image files, {} skipped as bad, \
                     {class_ignored} other files ignored)",
                    skipped.len() - before
                ),
            ));
        }
        by_class.push(
            good.into_iter()
                .map(|p| Sample {
                    origin: Origin::File(p),
                    label: label as u32,
                })
                .collect(),
        );
    }
    Ok(by_class)
}

/// Class list from the sub-folders of `dir`, named through `labels`.
fn classes_of(dir: &Path, labels: &HashMap<String, String>) -> Result<Vec<ClassInfo>, DataError> {
    let dirs = subdirs(dir)?;
    if dirs.is_empty() {
        let mut n = 0;
        let loose = image_files(dir, &mut n).map(|f| f.len()).unwrap_or(0);
        let hint = if loose > 0 {
            format!(" ({loose} images lie directly in it: put each class in its own folder)")
        } else {
            String::new()
        };
        return Err(DataError::layout(
            dir,
            format!("no class folders: expected <root>/<class>/<image>{hint}"),
        ));
    }
    Ok(dirs
        .into_iter()
        .map(|(folder, _)| ClassInfo {
            name: labels
                .get(&folder)
                .cloned()
                .unwrap_or_else(|| folder.clone()),
            folder,
        })
        .collect())
}

fn split_of(samples: Vec<Vec<Sample>>, bad_files: BadFilePolicy) -> Split {
    Split {
        samples: samples.into_iter().flatten().collect(),
        bad_files,
    }
}

/// Opens a class-folder dataset.
pub(crate) fn open(root: &Path, options: &FolderOptions) -> Result<Dataset, DataError> {
    let mut dataset = open_all(root, options)?;
    if let Some(limit) = options.per_class {
        dataset.train = dataset.train.first_per_class(limit.train);
        dataset.test = dataset.test.first_per_class(limit.test);
        dataset.description += &format!(
            ", at most {} train / {} test images a class",
            limit.train, limit.test
        );
    }
    Ok(dataset)
}

fn open_all(root: &Path, options: &FolderOptions) -> Result<Dataset, DataError> {
    match fs::metadata(root) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(DataError::path(root, "data folder does not exist"))
        }
        Err(e) => return Err(DataError::path(root, e)),
        Ok(m) if !m.is_dir() => return Err(DataError::path(root, "not a folder")),
        Ok(_) => {}
    }
    check_ratio(&options.split)?;
    let labels = read_labels(root)?;
    let (mut skipped, mut ignored) = (Vec::new(), 0);
    let train_dir = root.join("train");
    let test_dir = ["test", "val"]
        .iter()
        .map(|d| root.join(d))
        .find(|d| d.is_dir());

    if train_dir.is_dir() {
        let classes = classes_of(&train_dir, &labels)?;
        if let Some(test_dir) = test_dir {
            for (folder, _) in subdirs(&test_dir)? {
                if !classes.iter().any(|c| c.folder == folder) {
                    return Err(DataError::layout(
                        &test_dir,
                        format!("class folder {folder:?} has no counterpart in train/"),
                    ));
                }
            }
            let train = scan_classes(
                &train_dir,
                &classes,
                true,
                options,
                &mut skipped,
                &mut ignored,
            )?;
            let test = scan_classes(
                &test_dir,
                &classes,
                false,
                options,
                &mut skipped,
                &mut ignored,
            )?;
            let test_name = test_dir.file_name().unwrap_or_default().to_string_lossy();
            return Ok(Dataset {
                description: format!(
                    "image folders {} (split given by train/ and {test_name}/)",
                    root.display()
                ),
                classes,
                train: split_of(train, options.bad_files),
                test: split_of(test, options.bad_files),
                skipped,
                ignored,
            });
        }
        // Only train/: split it like a plain root.
        let by_class = scan_classes(
            &train_dir,
            &classes,
            true,
            options,
            &mut skipped,
            &mut ignored,
        )?;
        return Ok(seeded(
            root,
            "train/ only, ",
            classes,
            by_class,
            options,
            skipped,
            ignored,
        ));
    }
    let classes = classes_of(root, &labels)?;
    let by_class = scan_classes(root, &classes, true, options, &mut skipped, &mut ignored)?;
    Ok(seeded(
        root, "", classes, by_class, options, skipped, ignored,
    ))
}

fn seeded(
    root: &Path,
    note: &str,
    classes: Vec<ClassInfo>,
    by_class: Vec<Vec<Sample>>,
    options: &FolderOptions,
    skipped: Vec<Skipped>,
    ignored: usize,
) -> Dataset {
    let (train, test) = stratified(by_class, &options.split);
    Dataset {
        description: format!(
            "image folders {} ({note}stratified split, ratio {}, seed {})",
            root.display(),
            options.split.ratio,
            options.split.seed
        ),
        classes,
        train: Split {
            samples: train,
            bad_files: options.bad_files,
        },
        test: Split {
            samples: test,
            bad_files: options.bad_files,
        },
        skipped,
        ignored,
    }
}
