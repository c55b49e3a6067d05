"""Word count with Dask bag on a LocalCluster of 2 single-threaded workers.

Usage: python3 bench/dask_wordcount.py FILE...   (prints seconds and distinct words)
"""
import sys
import time

import dask.bag as db
from dask.distributed import Client, LocalCluster

if __name__ == "__main__":
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, Client(cluster):
        start = time.time()
        counts = db.read_text(sys.argv[1:], blocksize="64MiB").str.split().flatten().frequencies().compute()
        print(f"{time.time() - start:.2f} {len(counts)}")
