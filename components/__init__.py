"""Plain-Python building blocks of cropsearch. Nothing here imports Prefect."""
