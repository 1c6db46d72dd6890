//! Class-folder sources: layouts, splits, display names, and clear errors for bad layouts.

mod common;

use std::fs;

use cnn_data::{open, DataError, DataSpec, FolderOptions, Origin, SplitRule};
use common::{class_tree, write_png};

fn file_names(split: &cnn_data::Split) -> Vec<String> {
    split
        .samples
        .iter()
        .map(|s| match &s.origin {
            Origin::File(p) => p.file_name().unwrap().to_string_lossy().into_owned(),
            _ => unreachable!(),
        })
        .collect()
}

#[test]
fn plain_root_is_split_stratified_and_seeded() {
    let dir = tempfile::tempdir().unwrap();
    class_tree(dir.path(), &["b_cat", "a_dog", "c_eel"], 10);
    let ds = open(&DataSpec::folder(dir.path())).unwrap();
    // Sorted folder order gives the class index.
    let folders: Vec<&str> = ds.classes.iter().map(|c| c.folder.as_str()).collect();
    assert_eq!(folders, ["a_dog", "b_cat", "c_eel"]);
    assert_eq!(ds.class_names(), ["a_dog", "b_cat", "c_eel"]); // no LABELS.tsv
    assert_eq!(ds.train.class_counts(3), vec![8, 8, 8]);
    assert_eq!(ds.test.class_counts(3), vec![2, 2, 2]);
    assert!(ds.description.contains("stratified"));
    // Same seed, same split; another seed, another split.
    let again = open(&DataSpec::folder(dir.path())).unwrap();
    assert_eq!(file_names(&ds.test), file_names(&again.test));
    let other = open(&DataSpec::Folder {
        root: dir.path().into(),
        options: FolderOptions {
            split: SplitRule {
                ratio: 0.8,
                seed: 1,
            },
            ..Default::default()
        },
    })
    .unwrap();
    assert_ne!(file_names(&ds.test), file_names(&other.test));
    // Labels follow the folder.
    for s in &ds.train.samples {
        let Origin::File(p) = &s.origin else {
            unreachable!()
        };
        let folder = p.parent().unwrap().file_name().unwrap().to_str().unwrap();
        assert_eq!(ds.classes[s.label as usize].folder, folder);
    }
}

#[test]
fn train_and_test_folders_are_the_split_and_labels_tsv_names_classes() {
    let dir = tempfile::tempdir().unwrap();
    class_tree(&dir.path().join("train"), &["n01", "n02"], 3);
    class_tree(&dir.path().join("val"), &["n02"], 2);
    fs::write(
        dir.path().join("LABELS.tsv"),
        "n01\ttench\n# comment\n\nn02\tEnglish springer\n",
    )
    .unwrap();
    let ds = open(&DataSpec::folder(dir.path())).unwrap();
    assert_eq!(ds.class_names(), ["tench", "English springer"]);
    assert_eq!(ds.classes[0].folder, "n01");
    assert_eq!((ds.train.len(), ds.test.len()), (6, 2));
    assert_eq!(ds.test.class_counts(2), vec![0, 2]);
    assert!(ds.description.contains("val/"), "{}", ds.description);
}

#[test]
fn hidden_and_non_image_files_are_ignored_and_counted_subfolders_are_read() {
    let dir = tempfile::tempdir().unwrap();
    class_tree(dir.path(), &["a", "b"], 2);
    fs::write(dir.path().join("a/.DS_Store"), b"junk").unwrap();
    fs::write(dir.path().join("a/notes.txt"), b"hello").unwrap();
    fs::create_dir(dir.path().join(".git")).unwrap();
    write_png(&dir.path().join("b/nested/deep.PNG"), 4, 4, 1);
    let ds = open(&DataSpec::folder(dir.path())).unwrap();
    assert_eq!(ds.num_classes(), 2);
    assert_eq!(ds.ignored, 2);
    assert_eq!(ds.train.len() + ds.test.len(), 5);
}

fn err_of(spec: &DataSpec) -> String {
    open(spec).unwrap_err().to_string()
}

#[test]
fn layout_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();

    let missing = err_of(&DataSpec::folder(root.join("nope")));
    assert!(
        missing.contains("nope") && missing.contains("does not exist"),
        "{missing}"
    );

    fs::write(root.join("file"), b"x").unwrap();
    let not_dir = err_of(&DataSpec::folder(root.join("file")));
    assert!(not_dir.contains("not a folder"), "{not_dir}");

    let flat = root.join("flat");
    write_png(&flat.join("a.png"), 3, 3, 0);
    let e = err_of(&DataSpec::folder(&flat));
    assert!(
        e.contains("no class folders") && e.contains("1 images lie directly"),
        "{e}"
    );

    let empty_class = root.join("ec");
    class_tree(&empty_class, &["a"], 2);
    fs::create_dir_all(empty_class.join("b")).unwrap();
    fs::write(empty_class.join("b/readme.md"), b"x").unwrap();
    let e = err_of(&DataSpec::folder(&empty_class));
    assert!(
        e.contains("ec/b") && e.contains("no usable images") && e.contains("1 other files"),
        "{e}"
    );

    let stray = root.join("stray");
    class_tree(&stray.join("train"), &["a"], 2);
    class_tree(&stray.join("test"), &["a", "zzz"], 1);
    let e = err_of(&DataSpec::folder(&stray));
    assert!(e.contains("\"zzz\" has no counterpart in train/"), "{e}");

    let bad_tsv = root.join("tsv");
    class_tree(&bad_tsv, &["a"], 2);
    fs::write(bad_tsv.join("LABELS.tsv"), "a tench\n").unwrap();
    let e = err_of(&DataSpec::folder(&bad_tsv));
    assert!(e.contains("LABELS.tsv") && e.contains("line 1"), "{e}");

    let e = open(&DataSpec::Folder {
        root: bad_tsv.clone(),
        options: FolderOptions {
            split: SplitRule {
                ratio: 1.5,
                seed: 0,
            },
            ..Default::default()
        },
    })
    .unwrap_err();
    assert!(matches!(e, DataError::Config(_)), "{e}");
}
