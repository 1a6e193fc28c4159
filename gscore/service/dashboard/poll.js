// Repeat `step` every `ms` until stopped or until it returns true (finished); returns the stop function.
export function poll(step, ms) {
  let stopped = false;
  let timer = null;
  const tick = async () => {
    if (stopped) return;
    let finished = false;
    try {
      finished = await step();
    } catch (error) {
      finished = false; // a transient failure: try again on the next tick
    }
    if (!stopped && !finished) timer = setTimeout(tick, ms);
  };
  timer = setTimeout(tick, ms);
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
