"""Where a pipeline run's time went, from its benchmark files: the summed wall and CPU time
of the jobs per rule, and the share of the fit jobs' time that is start-up.

    snakemake --cores 8 && python benchmarks/bench_pipeline.py [results]

Start-up of a fit job = its wall time (``s`` in its benchmark file) minus the time it
spent drawing data, fitting and scoring (``work_seconds``, which the job records in its
fit record): interpreter start, imports, loading the compiled kernels, writing. The
share is the sum of start-ups over the sum of wall times, over every fit job. The same
in CPU time (the job process's CPU time at its end, ``process_cpu_seconds``, minus its
``work_cpu_seconds``; both counted by the process itself over every thread, where the
benchmark file's ``cpu_time`` samples it now and then) depends less on what else the
machine runs. Run it after a run from scratch: a job
that did not rerun keeps its old benchmark file.
"""

import argparse
import json
from pathlib import Path

import pandas as pd


def job_times(results: Path) -> pd.DataFrame:
    """One row per job: rule, job name, wall and CPU seconds, and for fit jobs the
    seconds spent on the fits themselves."""
    rows = []
    for path in sorted((results / "benchmarks").rglob("*.tsv")):
        job = path.relative_to(results / "benchmarks").with_suffix("")
        bench = pd.read_csv(path, sep="\t").iloc[0]
        row = {"rule": job.parts[0] if len(job.parts) > 1 else job.name, "job": str(job),
               "wall_s": float(bench["s"]), "cpu_s": float(bench["cpu_time"])}
        if row["rule"] == "fit":
            record = json.loads((results / "fits" / job.relative_to("fit")).with_suffix(
                ".json").read_text())
            row["work_s"] = record["work_seconds"]
            row["work_cpu_s"] = record["work_cpu_seconds"]
            row["process_cpu_s"] = record.get("process_cpu_seconds", float("nan"))
            row["draw_s"] = sum(fit["draw_seconds"] for fit in record["fits"])
            row["fit_s"] = sum(r["seconds"] for fit in record["fits"] for r in fit["rows"]
                               if r["fitted"])
            row["fits"] = len(record["fits"])
        rows.append(row)
    return pd.DataFrame(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", nargs="?", default="results", type=Path)
    args = parser.parse_args()
    jobs = job_times(args.results)
    print(jobs.groupby("rule").agg(jobs=("job", "size"), wall_s=("wall_s", "sum"),
                                   cpu_s=("cpu_s", "sum")).round(1).to_string())
    fits = jobs[jobs["rule"] == "fit"]
    startup = fits["wall_s"] - fits["work_s"]
    print(f"\nfit jobs: {len(fits)} jobs, {int(fits['fits'].sum())} fits, "
          f"wall {fits['wall_s'].sum():.1f} s, CPU {fits['cpu_s'].sum():.1f} s, "
          f"of which drawing, fitting and scoring {fits['work_s'].sum():.1f} s (drawing the "
          f"data {fits['draw_s'].sum():.1f} s, the estimators' fit() {fits['fit_s'].sum():.1f} s)")
    print(f"start-up: {startup.sum():.1f} s = {startup.sum() / fits['wall_s'].sum():.1%} of "
          f"the fit jobs' wall time (median {startup.median():.2f} s per job)")
    startup_cpu = fits["process_cpu_s"] - fits["work_cpu_s"]
    print(f"start-up CPU: {startup_cpu.sum():.1f} s = "
          f"{startup_cpu.sum() / fits['process_cpu_s'].sum():.1%} of the fit jobs' CPU time "
          f"(the job process's own count, every thread; median {startup_cpu.median():.2f} s "
          f"per job)")
    print(f"all jobs: wall {jobs['wall_s'].sum():.1f} s, CPU {jobs['cpu_s'].sum():.1f} s")


if __name__ == "__main__":
    main()
