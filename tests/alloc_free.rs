//! A training step in steady state makes no heap allocation: a counting
//! global allocator watches every thread while steps run.
//!
//! One test per binary, so nothing else allocates while it counts.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use advgrad::data::{Batches, Dataset};
use advgrad::nn::{Activation, Model};
use advgrad::optim::{OptimConfig, Optimizer, OptimizerKind};
use advgrad::rng::Rng;
use advgrad::train::{batch_tensors, gradient_step};
use advgrad::{Device, Tape};

/// The system allocator, counting calls and bytes while `COUNTING` is set.
struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static CALLS: AtomicUsize = AtomicUsize::new(0);
static BYTES: AtomicUsize = AtomicUsize::new(0);

impl Counting {
    fn note(&self, bytes: usize) {
        if COUNTING.load(Ordering::Relaxed) {
            CALLS.fetch_add(1, Ordering::Relaxed);
            BYTES.fetch_add(bytes, Ordering::Relaxed);
        }
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged; counting touches only atomics and never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.note(layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.note(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        self.note(new_size);
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Random images in [0, 1) and labels, shaped like Fashion-MNIST.
fn synthetic(rows: usize) -> Dataset {
    let mut rng = Rng::new(7);
    let images = (0..rows * 784).map(|_| rng.uniform_f32(0.0, 1.0)).collect();
    let labels = (0..rows).map(|_| (rng.next_u64() % 10) as u32).collect();
    Dataset::from_parts(images, labels, 784, 10).unwrap()
}

/// How a test pass takes its training steps.
#[derive(Clone, Copy, Debug)]
enum StepKind {
    /// `gradient_step`, as `train` does (fused or not, by the rule).
    Default,
    /// `Model::optimizer_step`: the weights stepped inside their gradient
    /// products.
    Fused,
    /// The gradients, then `Optimizer::step`'s separate pass.
    Separate,
}

const STEP_KINDS: [StepKind; 3] = [StepKind::Default, StepKind::Fused, StepKind::Separate];

/// Heap allocations (calls, bytes) made by a pass over `data` with the
/// model `arch` in
/// batches of 128 (the last one smaller), after `warmup` passes, each step
/// taken as `steps` says.
fn allocations_per_pass(
    arch: &str,
    kind: OptimizerKind,
    steps: StepKind,
    data: &Dataset,
    warmup: usize,
) -> (usize, usize) {
    let mut model = Model::new(arch, Activation::Relu, 0).unwrap();
    let mut optimizer = Optimizer::new(OptimConfig::new(kind, 0.01), &model.params()).unwrap();
    let mut tape = Tape::new();
    let (mut images, mut labels) = (Vec::new(), Vec::new());
    let order: Vec<usize> = (0..data.rows()).collect();
    let mut pass = |count: bool| {
        COUNTING.store(count, Ordering::SeqCst);
        for idx in Batches::new(&order, 128, false).unwrap() {
            let (x, y) = batch_tensors(data, idx, Device::Cpu, &mut images, &mut labels).unwrap();
            match steps {
                StepKind::Fused => {
                    let (loss, _) = model
                        .optimizer_step(&mut tape, x, &y, &mut optimizer, 0.01)
                        .unwrap();
                    assert!(loss.to_scalar().unwrap().is_finite());
                }
                StepKind::Separate => {
                    let pass = model.parameter_gradients(&mut tape, x, &y).unwrap();
                    assert!(pass.loss.to_scalar().unwrap().is_finite());
                    optimizer
                        .step(&mut model.params_mut(), &pass.grads, 0.01)
                        .unwrap();
                }
                StepKind::Default => {
                    let stats =
                        gradient_step(&mut model, &mut optimizer, &mut tape, x, &y, 0.01).unwrap();
                    assert!(stats.loss.is_finite() && stats.correct <= idx.len());
                }
            }
        }
        COUNTING.store(false, Ordering::SeqCst);
    };
    for _ in 0..warmup {
        pass(false);
    }
    CALLS.store(0, Ordering::SeqCst);
    BYTES.store(0, Ordering::SeqCst);
    pass(true);
    (CALLS.load(Ordering::SeqCst), BYTES.load(Ordering::SeqCst))
}

#[test]
fn a_training_step_allocates_nothing_in_steady_state() {
    let threads = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    // The MLP on 1000 rows: seven batches of 128 and one of 104, so the
    // pool serves two batch sizes.
    let data = synthetic(1000);
    for kind in [
        OptimizerKind::Sgd,
        OptimizerKind::Momentum,
        OptimizerKind::Adam,
    ] {
        for steps in STEP_KINDS {
            let (calls, bytes) =
                threads.install(|| allocations_per_pass("784-256-256-10", kind, steps, &data, 2));
            assert_eq!(
                (calls, bytes),
                (0, 0),
                "{kind:?} ({steps:?} steps): 8 training steps made {calls} heap allocations ({bytes} bytes)"
            );
        }
    }
    // The small CNN (convolutions, pooling, the flatten) on 600 rows: four
    // batches of 128 and one of 88.
    let data = synthetic(600);
    for kind in [OptimizerKind::Sgd, OptimizerKind::Adam] {
        for steps in STEP_KINDS {
            let (calls, bytes) = threads.install(|| {
                allocations_per_pass(
                    "1x28x28-c16k5p2-mp2-c32k5p2-mp2-128-10",
                    kind,
                    steps,
                    &data,
                    2,
                )
            });
            assert_eq!(
                (calls, bytes),
                (0, 0),
                "CNN {kind:?} ({steps:?} steps): 5 training steps made {calls} heap allocations ({bytes} bytes)"
            );
        }
    }
}
