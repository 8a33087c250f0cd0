"""EvalPlus evaluation: HumanEval+ and MBPP+ through evalplus's own loaders and checkers."""
