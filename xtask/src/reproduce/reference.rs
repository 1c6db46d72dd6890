//! The assignment's own figures (PyTorch on one T4), transcribed from
//! `../shared/reference/ASSIGNMENT.md` so the report can set this run's beside them.

/// One row of the assignment's reference table.
pub struct ReferenceRow {
    pub task: &'static str,
    pub model: &'static str,
    pub epochs: usize,
    pub lr: &'static str,
    pub wall_time: &'static str,
    pub gpu_memory: &'static str,
    pub train_acc: &'static str,
    pub test_acc: &'static str,
}

pub const REFERENCE: &[ReferenceRow] = &[
    ReferenceRow {
        task: "1",
        model: "AlexNet",
        epochs: 10,
        lr: "1e-4",
        wall_time: "55 min 36 s (epoch 1 ~30 min cold, then ~3 min)",
        gpu_memory: "756 MB",
        train_acc: "86.751 %",
        test_acc: "not given",
    },
    ReferenceRow {
        task: "2",
        model: "AlexNet",
        epochs: 20,
        lr: "1e-4",
        wall_time: "59 min 26 s (~178 s/epoch)",
        gpu_memory: "754 MB",
        train_acc: "96.752 %",
        test_acc: "79.823 % (best 81.245 %, epoch 18)",
    },
    ReferenceRow {
        task: "3",
        model: "AlexNet",
        epochs: 10,
        lr: "5e-3",
        wall_time: "10 min 44 s (~64.5 s/epoch)",
        gpu_memory: "1501 MB",
        train_acc: "10.202 %",
        test_acc: "9.192 %",
    },
    ReferenceRow {
        task: "4",
        model: "ResNet34",
        epochs: 10,
        lr: "(as the ResNet18 example)",
        wall_time: "not given",
        gpu_memory: "768 MB",
        train_acc: "93.442 %",
        test_acc: "72.962 % (best 73.808 %, epoch 4)",
    },
];

/// Where these figures come from, for the report.
pub const SOURCE: &str = "PyTorch on one NVIDIA T4, a student's report for the course unit \
    \"05 Classic convolutional neural networks\" (ImageNet-10: 13,000 images, 10,400 train / 2,600 test, 224x224); \
    summarised in `../shared/reference/ASSIGNMENT.md`. GPU memory is `torch.cuda.memory_allocated`.";
