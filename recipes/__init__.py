"""Deployment recipes: `# @package _global_` configs selected with recipe=NAME."""
