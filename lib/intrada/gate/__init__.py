"""The gate: what is judged and how, on top of every other group. The submission and its cached
artifacts (:mod:`.artifacts`), the thresholds file (:mod:`.thresholds`), the options resolved once
(:mod:`.config`), the run plan (:mod:`.plan`), verdicts (:mod:`.verdict`, :mod:`.perf`), which gates
must judge (:mod:`.requirements`) and the report (:mod:`.report`, :mod:`.report_figures`). The pytest
plugins in fixtures/ adapt it; nothing here imports pytest."""
