//! Every example of the course runs to completion and prints what it
//! teaches, so none can rot. `cargo test` builds the examples into
//! `target/<profile>/examples/` before it runs any test; each test here
//! runs one of those binaries and checks its exit status and the lines
//! that prove its lesson.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use advgrad::data::Split;
use advgrad::nn::{load_model, save_model, Activation, Model};

/// The examples, in course order; each has a test below and a row in
/// README's course table.
const COURSE: [&str; 7] = [
    "01_tape_by_hand",
    "02_gradcheck_and_custom_op",
    "03_training_loop",
    "04_attacks_by_hand",
    "05_reading_the_tape",
    "06_writing_a_cuda_kernel",
    "07_same_weights",
];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The built example `name`, beside this test's own profile directory.
fn example_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary has a path");
    let profile = exe
        .parent()
        .and_then(Path::parent)
        .expect("tests run from target/<profile>/deps");
    let bin = profile.join("examples").join(name);
    let source = root().join("examples").join(format!("{name}.rs"));
    let built = std::fs::metadata(&bin).and_then(|m| m.modified());
    let edited = std::fs::metadata(&source).and_then(|m| m.modified());
    match (built, edited) {
        (Ok(built), Ok(edited)) => assert!(
            built >= edited,
            "{} is older than {}: run `cargo test` without `--test` (it builds the examples) \
             or `cargo build --examples` in this profile",
            bin.display(),
            source.display()
        ),
        (Err(e), _) => panic!(
            "{} is not built ({e}): run `cargo test` without `--test`, which builds the examples",
            bin.display()
        ),
        (_, Err(e)) => panic!("{}: {e}", source.display()),
    }
    bin
}

/// Runs the example with `args`; panics with its output unless it exits
/// with status 0. Returns stdout.
fn run(name: &str, args: &[&str]) -> String {
    let out = Command::new(example_binary(name))
        .args(args)
        .current_dir(root())
        .output()
        .expect("the example starts");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{name} exited with {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    stdout
}

fn assert_says(name: &str, stdout: &str, lines: &[&str]) {
    for line in lines {
        assert!(
            stdout.contains(line),
            "{name} did not print `{line}`:\n{stdout}"
        );
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("advgrad-examples-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary folder");
    dir
}

fn have_data() -> bool {
    support::fashion_mnist(Split::Test).is_some()
}

#[test]
fn every_example_is_in_the_course_and_in_the_readme() {
    let mut found: Vec<String> = std::fs::read_dir(root().join("examples"))
        .expect("examples/ is readable")
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".rs").map(str::to_string)
        })
        .collect();
    found.sort();
    assert_eq!(found, COURSE, "examples/ and the course list differ");
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    for name in COURSE {
        assert!(
            readme.contains(&format!("--example {name}")),
            "README.md has no `--example {name}` row"
        );
    }
}

#[test]
fn chapter_1_derives_every_gradient_by_hand() {
    let out = run("01_tape_by_hand", &[]);
    assert_says(
        "01",
        &out,
        &[
            "= matmul(%0, %1)",
            "softmax_cross_entropy(%9)",
            "d loss / d W1 [4, 5]",
        ],
    );
    let worst: f64 = out
        .lines()
        .find_map(|l| l.strip_prefix("largest |tape − by hand| over every gradient: "))
        .expect("the comparison line")
        .parse()
        .expect("a number");
    assert!(worst < 1e-12, "{worst}");
    let checks = out
        .lines()
        .skip_while(|l| !l.starts_with("input  shape"))
        .skip(1)
        .take(5);
    assert!(
        checks.clone().count() == 5 && checks.into_iter().all(|l| l.ends_with("ok")),
        "{out}"
    );
}

#[test]
fn chapter_2_gradcheck_catches_the_wrong_rule_and_passes_the_right_one() {
    let out = run("02_gradcheck_and_custom_op", &[]);
    assert_says(
        "02",
        &out,
        &[
            "FAIL",
            "gradcheck caught it: ",
            "gradcheck failed for input 0",
            "gradcheck passed: ",
        ],
    );
}

/// The loop written out in the example ends with the parameters that
/// `advgrad train` reaches on the same settings, bit for bit. (The files'
/// metadata may list its keys in another order, so the tensors are
/// compared, not the bytes.)
#[test]
fn chapter_3_matches_advgrad_train_bit_for_bit() {
    if !have_data() {
        return;
    }
    let dir = temp_dir("03");
    let (ours, cli) = (dir.join("example.safetensors"), dir.join("cli.safetensors"));
    let out = run("03_training_loop", &[ours.to_str().expect("a UTF-8 path")]);
    assert_says(
        "03",
        &out,
        &["epoch 1: train loss", "epoch 2: train loss", "saved "],
    );
    let train = Command::new(env!("CARGO_BIN_EXE_advgrad"))
        .args([
            "train",
            "--arch",
            "784-128-10",
            "--act",
            "relu",
            "--optim",
            "sgd",
        ])
        .args([
            "--lr", "0.1", "--batch", "128", "--epochs", "2", "--seed", "0",
        ])
        .args(["--device", "cpu", "--quiet", "--out"])
        .arg(&cli)
        .output()
        .expect("advgrad starts");
    let stderr = String::from_utf8_lossy(&train.stderr);
    assert!(train.status.success(), "advgrad train failed:\n{stderr}");
    let (a, b) = (
        load_model(&ours, None).unwrap(),
        load_model(&cli, None).unwrap(),
    );
    assert_eq!(a.arch(), b.arch());
    for (name, (pa, pb)) in a
        .param_names()
        .iter()
        .zip(a.params().iter().zip(b.params()))
    {
        let bits = |t: &advgrad::Tensor| -> Vec<u32> {
            t.to_vec::<f32>()
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect()
        };
        assert!(bits(pa) == bits(pb), "{name} differs from advgrad train's");
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn chapter_4_attacks_by_hand_equal_advgrads_bit_for_bit() {
    if !have_data() {
        return;
    }
    let out = run("04_attacks_by_hand", &[]);
    assert_says(
        "04",
        &out,
        &[
            "FGSM by hand equals advgrad's FGSM in every bit",
            "PGD-10 by hand equals advgrad's PGD-10 in every bit",
            "largest pixel change: FGSM 0.1000, PGD 0.1000 (budget 0.1)",
        ],
    );
}

#[test]
fn chapter_5_draws_the_tape_and_shows_the_vanishing_gradient() {
    let dir = temp_dir("05");
    let out = run(
        "05_reading_the_tape",
        &[dir.to_str().expect("a UTF-8 path")],
    );
    assert_says(
        "05",
        &out,
        &["%11   softmax_cross_entropy (loss)", "wrote "],
    );
    let dot = std::fs::read_to_string(dir.join("tape.dot")).expect("tape.dot");
    assert!(
        dot.starts_with("digraph tape {") && dot.matches(" -> ").count() == 11,
        "{dot}"
    );
    let png = std::fs::File::open(dir.join("tape.png")).expect("tape.png");
    let mut reader = png::Decoder::new(png).read_info().expect("a PNG");
    let mut pixels = vec![0; reader.output_buffer_size()];
    reader.next_frame(&mut pixels).expect("the PNG decodes");
    let ratio = |act: &str| -> f64 {
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with(act))
            .expect(act);
        line.rsplit(' ')
            .next()
            .and_then(|r| r.parse().ok())
            .expect(line)
    };
    assert!(ratio("sigmoid") < 1e-2 * ratio("relu"), "{out}");
    std::fs::remove_dir_all(dir).ok();
}

/// The kernel runs on the emulator and agrees with its reference; ptxas
/// either runs or the example says why not and shows the committed rows;
/// the tape's op `gelu` gives the kernel's bits on the emulated device and
/// the example prints the command that times it; without a GPU it says
/// that nothing was timed.
#[test]
fn chapter_6_runs_the_new_kernel_on_the_emulator() {
    let out = run("06_writing_a_cuda_kernel", &[]);
    assert_says(
        "06",
        &out,
        &[
            "launch plan of gelu_fwd_f32",
            "every element agrees: f64 within 1e-12, f32 within 1e-5",
            "101 points in [-6, 6]: max error",
            "on --device emu, Tensor::gelu and gelu_backward give the kernels' bits",
            "time it: advgrad bench --op gelu --device cuda",
        ],
    );
    let ptxas_ran = out.contains("Used ") && out.contains("registers");
    let said_why = out.contains("ptxas was not run here: ") && out.contains("sm_80  gelu_fwd_f32");
    assert!(ptxas_ran || said_why, "{out}");
    if !advgrad::backend::cuda::is_available() {
        assert_says("06", &out, &["not timed: no GPU in this run"]);
    }
}

/// advgrad's half of `benches/peers/same_weights.py`, on files written
/// here: a small model and one epoch's order.
#[test]
fn chapter_7_trains_from_given_weights_and_order() {
    let Some(train) = support::fashion_mnist(Split::Train) else {
        return;
    };
    let dir = temp_dir("07");
    let model = Model::new("784-16-10", Activation::Relu, 3).unwrap();
    save_model(&model, &dir.join("init.safetensors")).unwrap();
    let order: Vec<u8> = advgrad::data::Rng::new(5)
        .permutation(train.rows())
        .iter()
        .flat_map(|&i| (i as u32).to_le_bytes())
        .collect();
    std::fs::write(dir.join("order.u32"), order).unwrap();
    let out = run(
        "07_same_weights",
        &[dir.to_str().expect("a UTF-8 path"), "1"],
    );
    let line = out
        .lines()
        .find(|l| l.starts_with("advgrad : clean "))
        .expect(&out);
    let numbers: Vec<f64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert_eq!(numbers.len(), 3, "{line}");
    assert!(numbers[0] > 0.7 && numbers[2] < numbers[0], "{line}");
    std::fs::remove_dir_all(dir).ok();
}
