"""Single-objective experts mixed at decode time: the mixtures (`mixture`) and how a policy of
them is steered, loaded and swept (`steering`)."""
