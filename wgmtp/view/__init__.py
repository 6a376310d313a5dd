"""The live view of a generation (`wgmtp run --view`, `--view-png FILE`): each token coloured by
how it came (plain decoding, an accepted draft by position, the verify's own token), the rejected
drafts, acceptance, tok/s and the GPU time of each round, drawn with Dear ImGui through wgpu on the
model's adapter, in a glfw window or offscreen.

Modules: `tap` (the engine's observer: queues step events), `state` (the events folded into what
a frame shows), `layout` (where the text goes), `palette` (classes and colours), `info` (the
header), `draw` (one ImGui frame), `canvas` (the view's own device, ImGui on a canvas, offscreen
frames), `window` (the glfw window), `png`, `app` (runs a command's generation with the view);
for `wgmtp serve --view`: `lanes` (a lane per request, the server's totals), `serve_draw` (its
frame), `serve` (runs the server with the view).
Layer: beside the API, below the CLI; the engine knows nothing of it (docs/ARCHITECTURE.md,
"Layers"; tests/test_layers.py).
"""
