"""`cli.py bench ...`: the throughput figures of docs/benchmarks.md, one module per stage, on the top floor so
that a bench may drive any stage below it (pipeline/, trainer/, colorfast/) and none of them knows about benches.

    preprocess.py  `bench preprocess`: preprocessing against JPEG decoding alone, memory flat
    stages.py      `bench stages`: where one worker's time goes, stage by stage
    scale.py       `bench scale`: preprocess, verify and the loader as the number of images grows
    step.py        `bench step`, `bench loader`, `bench epoch`: the trainer's step, its loader, an epoch
    colorize.py    `bench colorize`: seconds per megapixel, torch against onnxruntime
    memory.py      `bench memory`: colorize's peak memory on large photos
    serve.py       `bench serve`: the web page's latency per request
    hints.py       `bench hints`: one hint update of the page, torch against onnxruntime

Each prints one JSON object on its last line (the figures), after lines that say what was measured.
"""
