"""Reward models you train on your own data: a scalar Bradley-Terry model from preference
pairs (`pairwise`, `steerable train rm`) and MOSLIM's multi-head classification model
(`multihead`, `steerable train moslim-rm`)."""
