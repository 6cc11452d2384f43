//! Gradients of a loss summed over items split across the CPU threads (candle's elementwise
//! ops and their backward passes run on one thread each), for both tunings and the Fisher
//! sensitivity pass.

use candle_core::{backprop::GradStore, Tensor};

/// The gradient of the mean of `loss_of` over `items` with respect to the tensors in `keep`
/// (variables or intermediate tensors of the graph), the items split over the CPU threads
/// (candle's elementwise ops and their backward run on one thread each). Each item's graph is
/// freed after its backward pass, so memory holds one graph per thread.
pub(crate) fn parallel_gradients<T: Sync>(
    keep: &[Tensor],
    items: &[T],
    loss_of: &(dyn Fn(&T) -> candle_core::Result<Tensor> + Sync),
) -> candle_core::Result<GradStore> {
    let scale = 1.0 / items.len().max(1) as f64;
    summed_per_thread(keep, items, &|item, grads| {
        let g = (loss_of(item)? * scale)?.backward()?;
        accumulate(grads, &g, keep)
    })
}

/// The sum over `items` of the gradients of `keep` that `add_item` adds (with `accumulate`)
/// into a store, the items split over the CPU threads, one store per thread, then merged.
pub(crate) fn summed_per_thread<T: Sync>(
    keep: &[Tensor],
    items: &[T],
    add_item: &(dyn Fn(&T, &mut GradStore) -> candle_core::Result<()> + Sync),
) -> candle_core::Result<GradStore> {
    let parts = per_thread(items, &|part| {
        let mut grads = GradStore::default();
        for item in part {
            add_item(item, &mut grads)?;
        }
        Ok(grads)
    })?;
    let mut grads = GradStore::default();
    for part in &parts {
        accumulate(&mut grads, part, keep)?;
    }
    Ok(grads)
}

/// Adds `part`'s gradients of `keep` into `into`, a store of those alone: `part` also holds the
/// gradient of every other intermediate tensor of its graph, which must not outlive the pass.
/// The sums are detached: candle's gradients are results of ops on the forward pass's tensors
/// (a weight's is the layer input times the output gradient) and would keep that whole graph,
/// every activation of the sequence, alive for as long as the sum lives.
pub(crate) fn accumulate(
    into: &mut GradStore,
    part: &GradStore,
    keep: &[Tensor],
) -> candle_core::Result<()> {
    for t in keep {
        if let Some(g) = part.get(t) {
            let sum = match into.get(t) {
                Some(a) => (a + g)?,
                None => g.clone(),
            };
            into.insert(t, sum.detach());
        }
    }
    Ok(())
}

/// `f` of each of up to one contiguous part of `items` per CPU thread, run on those threads;
/// results in item order.
pub(crate) fn per_thread<T: Sync, R: Send>(
    items: &[T],
    f: &(dyn Fn(&[T]) -> candle_core::Result<R> + Sync),
) -> candle_core::Result<Vec<R>> {
    let threads = candle_core::utils::get_num_threads().clamp(1, items.len().max(1));
    let per = items.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(per)
            .map(|part| scope.spawn(move || f(part)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("tuning worker panicked"))
            .collect()
    })
}
