//! Reading `model` and `usage` out of OpenAI JSON and SSE answers as they stream past: the
//! reader lives in `holysheep-core`, shared with the other layers that count tokens.

pub(crate) use holysheep_core::usage::UsageCapture as Capture;
