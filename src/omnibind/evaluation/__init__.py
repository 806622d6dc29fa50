"""Evaluation: any-to-any retrieval, zero-shot classification and the human report."""

from omnibind.evaluation.report import write_report as write_report
from omnibind.evaluation.retrieval import counting_facts as counting_facts
from omnibind.evaluation.retrieval import evaluate_retrieval as evaluate_retrieval
from omnibind.evaluation.retrieval import joint_scores as joint_scores
from omnibind.evaluation.retrieval import query_combinations as query_combinations
from omnibind.evaluation.retrieval import rank_metrics as rank_metrics
from omnibind.evaluation.retrieval import relevance_matrix as relevance_matrix
from omnibind.evaluation.retrieval import retrieval_matrix as retrieval_matrix
from omnibind.evaluation.zero_shot import class_keys as class_keys
from omnibind.evaluation.zero_shot import format_prompts as format_prompts
from omnibind.evaluation.zero_shot import prototypes as prototypes
from omnibind.evaluation.zero_shot import zero_shot_accuracy as zero_shot_accuracy
