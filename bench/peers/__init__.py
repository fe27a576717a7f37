"""iPACS beside Orthanc: the same synthetic dataset and the same workloads against both, A/B.

    python -m bench peers                  # SQLite; results to docs/performance.md ("peers")
    python -m bench peers --pg-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres \
        --rounds 1 --growth 0 --section peers-postgresql   # iPACS on PostgreSQL too
    python -m bench peers --help                         # dataset size, rounds, wrk seconds, workers

dataset.py makes the DICOM files; orthanc.py and ipacs.py start the servers (servers.py:
what they share);
workloads.py drives them with the same clients (dcmtk storescu, curl, wrk),
run.py alternates the runs, table.py renders the table of medians and ratios.
"""
