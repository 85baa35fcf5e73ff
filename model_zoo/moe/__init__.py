"""Mixture of experts (Switch, ST-MoE): the layer, routing, groups, dispatch, sparse stacks."""
