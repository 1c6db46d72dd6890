//! The real `cnn` binary end to end: train a tiny run on real images, check its log lines and
//! files, resume it, interrupt it with SIGINT, evaluate it, and predict class names.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const CNN: &str = env!("CARGO_BIN_EXE_cnn");

/// `../shared` of the project (or `$CNN_SHARED_DIR`); `None` (skip) when absent, unless CI.
fn shared() -> Option<PathBuf> {
    let dir = std::env::var_os("CNN_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"));
    if dir.join("datasets/cifar10-mini/train").is_dir() {
        return Some(dir);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!(
            "{}: shared data missing (set CNN_SHARED_DIR)",
            dir.display()
        );
    }
    eprintln!("skipping: {} has no datasets/cifar10-mini", dir.display());
    None
}

/// A small copy of cifar10-mini: `train` images a class for training, 2 for testing, and
/// a LABELS.tsv giving every class a display name.
fn tiny_dataset(shared: &Path, root: &Path, train: usize) -> Vec<String> {
    let src = shared.join("datasets/cifar10-mini");
    let mut labels = String::new();
    let mut names = vec![];
    for (split, n) in [("train", train), ("test", 2)] {
        let mut classes: Vec<_> = std::fs::read_dir(src.join(split))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        classes.sort();
        for class in classes {
            let folder = class.file_name().unwrap().to_string_lossy().to_string();
            let dst = root.join(split).join(&folder);
            std::fs::create_dir_all(&dst).unwrap();
            let mut files: Vec<_> = std::fs::read_dir(&class)
                .unwrap()
                .flatten()
                .map(|e| e.path())
                .collect();
            files.sort();
            for f in files.iter().take(n) {
                std::fs::copy(f, dst.join(f.file_name().unwrap())).unwrap();
            }
            if split == "train" {
                let name = format!("Label of {folder}");
                labels.push_str(&format!("{folder}\t{name}\n"));
                names.push(name);
            }
        }
    }
    std::fs::write(root.join("LABELS.tsv"), labels).unwrap();
    names
}

/// Width and height of a PNG file, read from its header.
fn cnn_data_decode(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[1..4], b"PNG", "{} is not a PNG", path.display());
    let be = |i: usize| u32::from_be_bytes(bytes[i..i + 4].try_into().unwrap());
    (be(16), be(20))
}

fn cnn(args: &[&str]) -> Output {
    Command::new(CNN).args(args).output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn assert_ok(o: &Output) {
    assert!(
        o.status.success(),
        "failed: {}\n{}\n{}",
        o.status,
        stdout(o),
        stderr(o)
    );
}

/// One line on stderr starting with `error:`, a failure exit, no panic.
fn assert_clean_error(o: &Output, needle: &str) {
    let err = stderr(o);
    assert!(!o.status.success(), "should fail: {}", stdout(o));
    assert!(
        err.starts_with("error:") && err.trim_end().lines().count() == 1,
        "not one error line: {err}"
    );
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
    assert!(err.contains(needle), "'{needle}' not in: {err}");
}

fn train_args<'a>(data: &'a str, out: &'a str, epochs: &'a str) -> Vec<&'a str> {
    vec![
        "train",
        "--data",
        data,
        "--arch",
        "resnet18",
        "--image-size",
        "32",
        "--epochs",
        epochs,
        "--batch-size",
        "16",
        "--lr",
        "1e-3",
        "--log-every",
        "2",
        "--threads",
        "2",
        "--progress",
        "plain",
        "--out",
        out,
    ]
}

fn is_batch_line(line: &str) -> bool {
    // [Epoch 1, Batch 2] loss: 2.12258493
    let Some(rest) = line.strip_prefix("[Epoch ") else {
        return false;
    };
    let Some((_, loss)) = rest.split_once("] loss: ") else {
        return false;
    };
    loss.split_once('.').is_some_and(|(_, d)| d.len() == 8)
}

#[test]
fn train_eval_predict_resume() {
    let Some(shared) = shared() else { return };
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    let names = tiny_dataset(&shared, &data, 5);
    let run = t.path().join("run");
    let (data_s, run_s) = (data.to_str().unwrap(), run.to_str().unwrap());

    let o = cnn(&train_args(data_s, run_s, "2"));
    assert_ok(&o);
    let out = stdout(&o);
    assert!(
        out.contains("Total number of images for training: 50\n"),
        "{out}"
    );
    assert!(out.lines().any(is_batch_line), "{out}");
    for e in 1..=2 {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("Epoch {e} loss: ")))
            .unwrap_or_else(|| panic!("{out}"));
        assert!(
            line.contains(", train accuracy: ")
                && line.contains("%, test accuracy: ")
                && line.ends_with('%'),
            "{line}"
        );
    }
    assert!(out.contains("CPU memory allocated: "), "{out}");
    assert!(out.trim_end().ends_with("Finished Training"), "{out}");

    for f in [
        "config.json",
        "classes.json",
        "metrics.jsonl",
        "metrics.csv",
        "train.log",
        "report.json",
        "checkpoint.json",
    ] {
        assert!(run.join(f).is_file(), "{f} missing");
    }
    let log = std::fs::read_to_string(run.join("train.log")).unwrap();
    assert!(log.contains("Epoch 2 loss: ") && log.contains("Finished Training"));
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["arch"], "resnet18");
    assert_eq!(config["num_classes"], 10);
    let classes = std::fs::read_to_string(run.join("classes.json")).unwrap();
    assert!(classes.contains("Label of airplane"), "{classes}");
    assert_eq!(
        std::fs::read_to_string(run.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .count(),
        2
    );

    // Training again into the same folder without --resume is refused.
    assert_clean_error(&cnn(&train_args(data_s, run_s, "2")), "--resume");

    // eval: accuracy, per-class accuracy, confusion matrix.
    let o = cnn(&["eval", "--checkpoint", run_s]);
    assert_ok(&o);
    let out = stdout(&o);
    assert!(
        out.contains("images: 20") && out.contains("accuracy:") && out.contains("confusion matrix"),
        "{out}"
    );
    assert!(out.contains("Label of truck"), "{out}");
    let o = cnn(&["eval", "--checkpoint", run_s, "--json"]);
    assert_ok(&o);
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(json["confusion"].as_array().unwrap().len(), 10);

    // predict: class names from LABELS.tsv, two models side by side, and JSON.
    let photo = shared.join("photos/chelsea.png");
    let photo_s = photo.to_str().unwrap();
    let o = cnn(&[
        "predict",
        "--checkpoint",
        run_s,
        "--checkpoint",
        run_s,
        "--top-k",
        "3",
        photo_s,
    ]);
    assert_ok(&o);
    let out = stdout(&o);
    assert!(names.iter().any(|n| out.contains(n.as_str())), "{out}");
    assert!(out.contains("rank"), "{out}");
    let o = cnn(&[
        "predict",
        "--checkpoint",
        run_s,
        "--json",
        "--top-k",
        "3",
        photo_s,
        photo_s,
    ]);
    assert_ok(&o);
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let top = &json[0]["models"][0]["top"];
    assert_eq!(top.as_array().unwrap().len(), 3);
    assert!(names.contains(&top[0]["name"].as_str().unwrap().to_string()));
    let p: f64 = top
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["probability"].as_f64().unwrap())
        .sum();
    assert!(p > 0.0 && p <= 1.0 + 1e-6);

    // Every image of a folder of class folders: its train and test images together.
    let o = cnn(&[
        "eval",
        "--checkpoint",
        run_s,
        "--data",
        data_s,
        "--split",
        "all",
    ]);
    assert_ok(&o);
    assert!(stdout(&o).contains("images: 70 "), "{}", stdout(&o));
    // The best weights: those of the epoch with the highest test accuracy.
    let o = cnn(&["eval", "--checkpoint", run_s, "--weights", "best", "--json"]);
    assert_ok(&o);
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let accuracies: Vec<f64> = metrics
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["test_accuracy"]
                .as_f64()
                .unwrap()
        })
        .collect();
    let best = accuracies.iter().copied().fold(f64::MIN, f64::max);
    assert_eq!(json["weights"], "best");
    assert_eq!(json["accuracy"].as_f64().unwrap(), best);

    // A bad image among the data: an error naming it, or skipped and listed on request.
    let bad = data.join("test/airplane/broken.png");
    std::fs::write(&bad, b"not a png").unwrap();
    assert_clean_error(
        &cnn(&["eval", "--checkpoint", run_s, "--data", data_s]),
        "broken.png",
    );
    let o = cnn(&[
        "eval",
        "--checkpoint",
        run_s,
        "--data",
        data_s,
        "--bad-files",
        "skip",
    ]);
    assert_ok(&o);
    let out = stdout(&o);
    assert!(
        out.contains("images: 20 ") && out.contains("skipped 1 bad image files:"),
        "{out}"
    );
    assert!(out.contains("broken.png"), "{out}");
    std::fs::remove_file(&bad).unwrap();

    // predict goes on past an unreadable image: one error line for it, the others
    // predicted, exit status 1; --cam draws each model's Grad-CAM.
    let unreadable = t.path().join("unreadable.jpg");
    std::fs::write(&unreadable, b"no image here").unwrap();
    let cams = t.path().join("cams");
    let o = cnn(&[
        "predict",
        "--checkpoint",
        run_s,
        "--cam",
        cams.to_str().unwrap(),
        unreadable.to_str().unwrap(),
        photo_s,
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: ") && err.contains("unreadable.jpg"),
        "{err}"
    );
    let out = stdout(&o);
    assert!(
        out.contains("chelsea.png") && !out.contains("unreadable"),
        "{out}"
    );
    let picture = cams.join("chelsea-run.png");
    assert!(
        out.contains(&format!("(layer4.1, 1x1): {}", picture.display())),
        "{out}"
    );
    // 32 px leaves ResNet's layer4 one value: said, not stretched into a picture of nothing.
    assert!(
        out.contains("note: layer4.1's map is 1x1 at 32 px, too coarse"),
        "{out}"
    );
    let decoded = cnn_data_decode(&picture);
    assert_eq!(decoded, (224, 224));

    // --resume extends the run; changing what is trained is refused.
    let o = cnn(&[
        "train",
        "--out",
        run_s,
        "--resume",
        "--epochs",
        "3",
        "--progress",
        "plain",
        "--threads",
        "2",
    ]);
    assert_ok(&o);
    let out = stdout(&o);
    assert!(
        out.contains("Resuming") && out.contains("Epoch 3 loss: ") && !out.contains("Epoch 1 loss"),
        "{out}"
    );
    assert_eq!(
        std::fs::read_to_string(run.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .count(),
        3
    );
    assert_clean_error(
        &cnn(&["train", "--out", run_s, "--resume", "--lr", "0.5"]),
        "--lr",
    );
}

#[test]
fn ctrl_c_saves_and_resume_finishes() {
    let Some(shared) = shared() else { return };
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    tiny_dataset(&shared, &data, 8);
    let run = t.path().join("run");
    let (data_s, run_s) = (data.to_str().unwrap(), run.to_str().unwrap());
    let mut args = train_args(data_s, run_s, "2");
    let at = args.iter().position(|a| *a == "--log-every").unwrap();
    args[at + 1] = "1";
    let mut child = Command::new(CNN)
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.starts_with("[Epoch 1, Batch 1]") {
            break;
        }
    }
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    for line in lines {
        seen.push_str(&line.unwrap());
        seen.push('\n');
    }
    let status = child.wait().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(130), "{seen}\n{err}");
    // The whole command to continue, with the flags that may change on a resume.
    let want = format!(
        "continue with: cnn train --resume --out {run_s} --epochs 2 --threads 2 --log-every 1 --progress plain"
    );
    assert!(err.contains(&want), "{err}");
    assert!(seen.contains("Interrupted at epoch 1"), "{seen}");
    assert!(!seen.contains("Finished Training"));
    assert!(!err.contains("panicked"), "{err}");
    assert!(run.join("checkpoint.json").is_file());

    // Run exactly that command (the temporary path holds no spaces).
    let line = want.strip_prefix("continue with: cnn ").unwrap();
    let o = cnn(&line.split(' ').collect::<Vec<_>>());
    assert_ok(&o);
    let out = stdout(&o);
    assert!(
        out.contains("Resuming")
            && out.contains("Epoch 2 loss: ")
            && out.contains("Finished Training"),
        "{out}"
    );
    assert_eq!(
        std::fs::read_to_string(run.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .count(),
        2
    );
}

#[test]
fn errors_are_one_line() {
    assert_clean_error(
        &cnn(&[
            "train",
            "--data",
            "/no/such/folder",
            "--out",
            "/tmp/cnn-never",
        ]),
        "/no/such/folder",
    );
    assert_clean_error(
        &cnn(&["predict", "--checkpoint", "/no/such/run", "x.jpg"]),
        "/no/such/run",
    );
    assert_clean_error(
        &cnn(&["eval", "--checkpoint", "/no/such/run"]),
        "/no/such/run",
    );
    assert_clean_error(
        &cnn(&["summary", "--arch", "lenet"]),
        "unknown architecture",
    );
    let o = cnn(&[
        "train",
        "--data",
        "synthetic",
        "--device",
        "cuda",
        "--out",
        "/tmp/cnn-never",
    ]);
    if !cfg!(feature = "cuda") {
        assert_clean_error(&o, "cuda");
    }
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("r");
    assert_clean_error(
        &cnn(&[
            "train",
            "--data",
            "synthetic",
            "--epochs",
            "0",
            "--out",
            out.to_str().unwrap(),
        ]),
        "epochs",
    );
    assert_clean_error(
        &cnn(&[
            "train",
            "--data",
            "synthetic",
            "--checkpoint-every",
            "0",
            "--out",
            out.to_str().unwrap(),
        ]),
        "checkpoint interval must be at least 1 epoch",
    );
    assert!(!out.exists(), "a refused run leaves no folder");
    // A bad flag value is clap's usage error (exit 2), not a panic.
    let o = cnn(&["train", "--data", "synthetic", "--lr", "fast"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(!stderr(&o).contains("panicked"));
    let o = cnn(&["train", "--data", "synthetic", "--cpu-kernels", "fast"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("possible values: ours, candle"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn closed_stdout_is_not_an_error() {
    // `cnn summary | head -1`
    let mut child = Command::new(CNN)
        .args(["summary", "--arch", "resnet34"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let status = child.wait().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "{status} {err}");
    assert!(err.is_empty(), "{err}");
}

#[test]
fn predict_help_names_each_networks_cam_layer() {
    let o = cnn(&["predict", "--help"]);
    assert_ok(&o);
    let help = stdout(&o).split_whitespace().collect::<Vec<_>>().join(" ");
    for arch in cnn_models::ARCHITECTURES {
        assert!(
            help.contains(&format!("{} {} (", arch.name, arch.cam_layer)),
            "{}'s {} not in: {help}",
            arch.name,
            arch.cam_layer
        );
    }
    assert!(help.contains("--device <DEVICE> Device: auto"), "{help}");
}

#[test]
fn help_documents_every_flag_with_its_default() {
    let o = cnn(&["train", "--help"]);
    assert_ok(&o);
    let help = stdout(&o);
    for flag in [
        "--data",
        "--arch",
        "--epochs",
        "--lr",
        "--optimizer",
        "--batch-size",
        "--image-size",
        "--seed",
        "--out",
        "--resume",
        "--device",
        "--threads",
    ] {
        assert!(help.contains(flag), "{flag} missing from help");
    }
    // Every option line block mentions a default (flags without values say "off").
    let mut blocks: Vec<String> = vec![];
    for line in help.lines() {
        if line.trim_start().starts_with("--") || line.trim_start().starts_with("-h") {
            blocks.push(line.to_string());
        } else if let Some(b) = blocks.last_mut() {
            b.push_str(line);
        }
    }
    for b in blocks
        .iter()
        .filter(|b| !b.contains("--help") && !b.contains("--data"))
    {
        assert!(b.contains("default"), "no default documented: {b}");
    }
}

/// A fixture of cnn-models' `.pth` tests (made with PyTorch, see its script).
fn pth_fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../cnn-models/tests/data")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

#[test]
fn convert_checks_the_architecture_and_init_from_fine_tunes() {
    let t = tempfile::tempdir().unwrap();
    let converted = t.path().join("converted.safetensors");
    let conv = converted.to_str().unwrap();
    // A state dict of another network, and a pickle that is no state dict: one-line errors.
    assert_clean_error(
        &cnn(&[
            "convert",
            &pth_fixture("bare.pth"),
            conv,
            "--arch",
            "resnet18",
        ]),
        "bare.pth: does not match resnet18",
    );
    assert_clean_error(
        &cnn(&[
            "convert",
            &pth_fixture("not_a_state_dict.pth"),
            conv,
            "--arch",
            "resnet18",
        ]),
        "not_a_state_dict.pth: cannot read weights: holds no tensors, so it is not a state dict",
    );
    assert!(!converted.exists(), "nothing written on an error");

    let Some(shared) = shared() else { return };
    let data = t.path().join("data");
    tiny_dataset(&shared, &data, 2);
    let first = t.path().join("first");
    let (data_s, first_s) = (data.to_str().unwrap(), first.to_str().unwrap());
    assert_ok(&cnn(&train_args(data_s, first_s, "1")));
    let weights = first.join("checkpoints/epoch0001-batch000000/model.safetensors");
    let weights_s = weights.to_str().unwrap();

    let o = cnn(&["convert", weights_s, conv, "--arch", "resnet18"]);
    assert_ok(&o);
    assert!(
        stdout(&o).contains("resnet18 for 10 classes, 102 tensors -> "),
        "{}",
        stdout(&o)
    );
    assert_clean_error(
        &cnn(&["convert", weights_s, conv, "--arch", "resnet18"]),
        "already exists (pass --force",
    );
    assert_clean_error(
        &cnn(&["convert", weights_s, conv, "--arch", "alexnet", "--force"]),
        "does not match alexnet",
    );

    let tuned = t.path().join("tuned");
    let tuned_s = tuned.to_str().unwrap();
    let mut args = train_args(data_s, tuned_s, "1");
    args.extend(["--init-from", conv, "--freeze-backbone", "--seed", "3"]);
    let o = cnn(&args);
    assert_ok(&o);
    let out = stdout(&o);
    assert!(
        out.contains("backbone: frozen") && out.contains("loaded 102 of 102 tensors"),
        "{out}"
    );
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tuned.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["init_from"]["source"], conv);
    assert_eq!(config["backbone_lr_factor"], 0.0);

    // --resume keeps the checkpoint's weights and says the flag is ignored.
    let mut args = train_args(data_s, tuned_s, "2");
    args.extend(["--resume", "--init-from", "/no/such.pth"]);
    let o = cnn(&args);
    assert_ok(&o);
    assert!(
        stderr(&o).contains("--init-from is ignored with --resume"),
        "{}",
        stderr(&o)
    );

    // Files that cannot start a run: clean errors, no run folder left behind.
    let other = t.path().join("other");
    let mut args = train_args(data_s, other.to_str().unwrap(), "1");
    args.extend(["--init-from", "/no/such.pth"]);
    assert_clean_error(&cnn(&args), "/no/such.pth: no such weights file");
    let bare = pth_fixture("bare.pth");
    let mut args = train_args(data_s, other.to_str().unwrap(), "1");
    args.extend(["--init-from", &bare]);
    assert_clean_error(&cnn(&args), "no tensor matches resnet18");
    assert!(!other.join("config.json").exists());
    let hub = t.path().join("hf");
    let mut args = train_args(data_s, other.to_str().unwrap(), "1");
    args.extend(["--init-from", "hub:someone/net/model.safetensors"]);
    let o = Command::new(CNN)
        .args(&args)
        .env("HF_HUB_CACHE", &hub)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    assert_clean_error(
        &o,
        "model.safetensors of someone/net is not in the local hub cache",
    );
}
