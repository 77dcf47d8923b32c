//! The cost of one routing decision with 8 deployments: which deployment a request goes to
//! (health check of each, the weighted draw of two, their Peak-EWMA loads), nothing sent.
//!
//! `cargo bench -p holysheep-router --bench router`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use holysheep_router::{Deployment, Router};

/// Eight deployments on ports nothing listens on: a decision sends nothing.
fn router(models: impl Fn(usize) -> Vec<&'static str>, weight: impl Fn(usize) -> u32) -> Router {
    let mut builder = Router::builder();
    for i in 0..8 {
        builder = builder.deployment(
            Deployment::new(
                format!("http://127.0.0.1:{}/v1", 1000 + i),
                format!("sk-{i}"),
            )
            .name(format!("d{i}"))
            .weight(weight(i))
            .models(models(i)),
        );
    }
    builder.build().expect("the router builds")
}

fn decision(c: &mut Criterion) {
    let mut group = c.benchmark_group("router");
    let every = router(|_| Vec::new(), |_| 1);
    group.bench_function("choose_8_deployments", |b| {
        b.iter(|| black_box(every.choose(black_box("gpt-4.1"))))
    });
    let weighted = router(|_| Vec::new(), |i| 1 + i as u32);
    group.bench_function("choose_8_weighted", |b| {
        b.iter(|| black_box(weighted.choose(black_box("gpt-4.1"))))
    });
    let subsets = router(
        |i| {
            if i % 2 == 0 {
                vec!["gpt-4.1", "claude-sonnet-4.5"]
            } else {
                vec!["deepseek-v3.2"]
            }
        },
        |_| 1,
    );
    group.bench_function("choose_4_of_8_by_model", |b| {
        b.iter(|| black_box(subsets.choose(black_box("deepseek-v3.2"))))
    });
    group.finish();
}

criterion_group!(benches, decision);
criterion_main!(benches);
