"""`pagedserve cluster`: N `pagedserve serve` replicas on loopback with the SMG gateway in front.

A tool beside the server (it starts server processes, it is not inside one): cluster_options holds
the options, replica and gateway build each process's command line, processes starts and stops
process groups, and cluster ties them together.
"""
