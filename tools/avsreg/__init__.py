"""AVS-Reg: the deterministic AVSBench-style data set generator (`generate`) and its tests."""
