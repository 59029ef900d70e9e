"""Request metrics of an n-choice request: its prompt and first token count once, its tokens all."""

from __future__ import annotations

from pagedserve.scheduler.request import RequestOutput
from pagedserve.service.metrics import ServerMetrics


def output(index, new_token_ids, num_output_tokens, finished=False):
    return RequestOutput("r", new_token_ids, num_prompt_tokens=7, num_output_tokens=num_output_tokens,
                         finished=finished, finish_reason="length" if finished else None, arrival_time=0.0,
                         first_scheduled_time=1.0, first_token_time=2.0, finish_time=3.0 if finished else None,
                         index=index)


def test_three_choices_count_one_prompt_one_first_token_and_every_generated_token():
    metrics = ServerMetrics(lambda: None, clock=lambda: 5.0)
    for index in range(3):
        metrics.observe_output(output(index, [10 + index], 1))
    for index in range(3):
        metrics.observe_output(output(index, [20 + index, 30 + index], 3, finished=True))
    sample = metrics.registry.get_sample_value
    assert sample("pagedserve_prompt_tokens_total") == 7
    assert sample("pagedserve_generation_tokens_total") == 9
    assert sample("pagedserve_time_to_first_token_seconds_count") == 1
    assert sample("pagedserve_request_queue_time_seconds_count") == 1
    assert sample("pagedserve_inter_token_latency_seconds_count") == 6  # 2 per choice, within its own stream
    assert sample("pagedserve_e2e_request_latency_seconds_count") == 3
