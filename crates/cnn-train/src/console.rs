//! Showing a run to a person: progress bars with ETA and images/s on a terminal (epochs
//! over batches), the assignment's log lines as plain lines otherwise.

use crate::fit::Event;
use crate::metrics::EpochRecord;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::{IsTerminal, Write};

/// How a [`Console`] shows progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Display {
    /// Bars when stdout is a terminal, plain lines otherwise.
    Auto,
    /// Progress bars (lines printed above them).
    Bars,
    /// Log lines only (a line with timings and images/s after each epoch).
    Plain,
    /// Nothing.
    Quiet,
}

/// Prints [`Event`]s from `fit`. Output errors (a closed pipe) are ignored: training goes on.
pub struct Console {
    display: Display,
    multi: MultiProgress,
    epochs: Option<ProgressBar>,
    batches: Option<ProgressBar>,
}

impl Console {
    pub fn new(display: Display) -> Self {
        let display = match display {
            Display::Auto if std::io::stdout().is_terminal() => Display::Bars,
            Display::Auto => Display::Plain,
            d => d,
        };
        let multi = MultiProgress::with_draw_target(match display {
            Display::Bars => ProgressDrawTarget::stdout(),
            _ => ProgressDrawTarget::hidden(),
        });
        Self {
            display,
            multi,
            epochs: None,
            batches: None,
        }
    }

    pub fn handle(&mut self, event: &Event) {
        match *event {
            Event::Started {
                train_images,
                epochs,
                epoch,
                batch,
                batches,
                ..
            } => {
                if self.display == Display::Bars {
                    let e = self.multi.add(ProgressBar::new(epochs as u64).with_style(style(
                        "{percent:>3}%|{bar:30}| {pos}/{len} epochs [{elapsed_precise}<{eta_precise}]",
                    )));
                    e.set_position(epoch as u64);
                    e.reset_eta();
                    let b = self.multi.add(ProgressBar::new(train_images as u64).with_style(style(
                        "  epoch {prefix} |{bar:30}| {msg} [{elapsed_precise}<{eta_precise}, {per_sec}]",
                    )));
                    b.set_prefix(format!("{}", epoch + 1));
                    let done = (batch * train_images).checked_div(batches).unwrap_or(0);
                    b.set_position(done as u64);
                    b.reset_eta();
                    self.epochs = Some(e);
                    self.batches = Some(b);
                }
            }
            Event::Batch {
                epoch,
                batch,
                batches,
                images,
                loss,
            } => {
                if let Some(b) = &self.batches {
                    b.set_prefix(format!("{epoch}"));
                    b.set_message(format!("batch {batch}/{batches} loss {loss:.4}"));
                    b.inc(images as u64);
                }
            }
            Event::Evaluating { epoch } => {
                if let Some(b) = &self.batches {
                    b.set_message(format!("evaluating epoch {epoch}"));
                }
            }
            Event::Line(text) => self.print(text),
            Event::EpochEnd(record) => {
                self.print(&timing_line(record));
                if let (Some(e), Some(b)) = (&self.epochs, &self.batches) {
                    e.inc(1);
                    b.reset();
                    b.set_message("");
                    b.set_prefix(format!("{}", record.epoch + 1));
                }
            }
            Event::Finished(report) => {
                for bar in [self.batches.take(), self.epochs.take()]
                    .into_iter()
                    .flatten()
                {
                    bar.finish_and_clear();
                }
                if !matches!(report.verdict, crate::Verdict::Converging) {
                    self.print(&format!("Verdict: {}", report.verdict.describe()));
                }
            }
        }
    }

    fn print(&self, text: &str) {
        match self.display {
            Display::Bars => {
                let _ = self.multi.println(text);
            }
            Display::Plain => {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{text}");
                let _ = out.flush();
            }
            Display::Quiet | Display::Auto => {}
        }
    }
}

/// `  time 61.2 s (data 1.0, forward 20.1, backward 35.2, optimiser 1.9, eval 3.0), 170 img/s, lr 0.0001`
pub fn timing_line(r: &EpochRecord) -> String {
    let t = &r.time;
    format!(
        "  time {:.1} s (data {:.1}, forward {:.1}, backward {:.1}, optimiser {:.1}, eval {:.1}), {:.0} img/s, lr {}",
        t.total_s, t.data_s, t.forward_s, t.backward_s, t.optimizer_s, t.eval_s, r.images_per_sec, r.lr
    )
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .expect("valid template")
        .progress_chars("█▉▊▋▌▍▎▏ ")
}
