//! Heat maps over pictures: the colour map's ends, where an enlarged grid puts its values,
//! the blend, and the PNG written.

use cnn_data::{decode_file, jet, overlay_heatmap, save_png, Enlarge, Grid, Rgb8};

fn grey(side: u32) -> Rgb8 {
    Rgb8::new(side, side, vec![100; (side * side * 3) as usize]).unwrap()
}

#[test]
fn jet_runs_from_dark_blue_to_dark_red() {
    assert_eq!(jet(0.0), [0, 0, 128]);
    assert_eq!(jet(0.5), [128, 255, 128]);
    assert_eq!(jet(1.0), [128, 0, 0]);
    assert_eq!(jet(-3.0), jet(0.0));
    assert_eq!(jet(7.0), jet(1.0));
}

#[test]
fn blocks_keep_each_cell_flat_and_the_blend_is_exact() {
    // 2x2 grid, hot top-right cell, over an 8x8 grey picture.
    let values = [0.0, 1.0, 0.0, 0.0];
    let grid = Grid {
        values: &values,
        rows: 2,
        cols: 2,
    };
    let out = overlay_heatmap(&grey(8), grid, Enlarge::Blocks, 0.5).unwrap();
    // 0.5 * jet(1) + 0.5 * 100 = (114, 50, 50); 0.5 * jet(0) + 0.5 * 100 = (50, 50, 114).
    for y in 0..8 {
        for x in 0..8 {
            let want = if y < 4 && x >= 4 {
                [114, 50, 50]
            } else {
                [50, 50, 114]
            };
            assert_eq!(out.get(x, y), want, "({x}, {y})");
        }
    }
}

#[test]
fn smooth_enlarging_peaks_at_the_hot_cell_and_falls_off() {
    let values = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0];
    let grid = Grid {
        values: &values,
        rows: 3,
        cols: 3,
    };
    // alpha 1: the heat alone. 15 px, cells of 5: cell centres on pixels 2, 7 and 12; the
    // hot cell (row 2, column 1) is centred on pixel (7, 12).
    let out = overlay_heatmap(&grey(15), grid, Enlarge::Smooth, 1.0).unwrap();
    let close = |got: [u8; 3], v: f32| {
        let want = jet(v);
        assert!(
            got.iter().zip(want).all(|(&g, w)| g.abs_diff(w) <= 1),
            "{got:?} is not jet({v}) = {want:?}"
        );
    };
    close(out.get(7, 12), 1.0);
    close(out.get(2, 2), 0.0);
    close(out.get(12, 2), 0.0);
    // Going up from the hot centre towards the next one (pixel 7), linearly: 1 px is 0.2.
    close(out.get(7, 11), 0.8);
    close(out.get(7, 10), 0.6);
    close(out.get(7, 8), 0.2);
    // Beyond the last centre the border cell's value holds.
    close(out.get(7, 14), 1.0);
}

#[test]
fn a_grid_of_the_wrong_size_is_an_error() {
    let grid = Grid {
        values: &[1.0; 5],
        rows: 2,
        cols: 3,
    };
    let err = overlay_heatmap(&grey(4), grid, Enlarge::Smooth, 0.5).unwrap_err();
    assert!(
        err.to_string().contains("2x3 needs 6 values, got 5"),
        "{err}"
    );
}

#[test]
fn save_png_writes_a_picture_that_reads_back() {
    let t = tempfile::tempdir().unwrap();
    let values = [0.25, 0.75];
    let grid = Grid {
        values: &values,
        rows: 1,
        cols: 2,
    };
    let out = overlay_heatmap(&grey(6), grid, Enlarge::Blocks, 0.4).unwrap();
    let path = t.path().join("cam.png");
    save_png(&out, &path).unwrap();
    assert_eq!(decode_file(&path).unwrap(), out);
    assert!(!t.path().join("cam.png.tmp").exists());
    let err = save_png(&out, t.path().join("no/such/dir/x.png")).unwrap_err();
    assert!(err.to_string().contains("x.png.tmp"), "{err}");
}
