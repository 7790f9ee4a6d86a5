// OpenAI completions and chat-completions: request schemas (zod), response and SSE chunk shapes, error objects.

import { z } from 'zod';

const stopField = z.union([z.string().min(1, 'stop strings must be non-empty'), z.array(z.string().min(1, 'stop strings must be non-empty')).max(4, 'at most 4 stop strings')]).nullish();

/** Fields both endpoints share. Unknown fields are ignored, as OpenAI's own server does. */
const common = {
  model: z.string().optional(),
  max_tokens: z.number().int('max_tokens must be an integer').min(1, 'max_tokens must be at least 1').nullish(),
  temperature: z.number().min(0, 'temperature must be >= 0').max(2, 'temperature must be <= 2').nullish(),
  top_p: z.number().gt(0, 'top_p must be > 0').max(1, 'top_p must be <= 1').nullish(),
  /** Not in OpenAI's API; vLLM's extension, same name. 0 or -1 = off. */
  top_k: z.number().int('top_k must be an integer').min(-1, 'top_k must be >= -1').nullish(),
  seed: z.number().int('seed must be an integer').nullish(),
  stop: stopField,
  stream: z.boolean().nullish(),
  /** OpenAI's: with include_usage, a stream ends with a chunk carrying usage (and no choices). */
  stream_options: z.object({ include_usage: z.boolean().nullish() }).nullish(),
  /** Not in OpenAI's API; vLLM's extension, same name: generate past end-of-sequence ids (benchmarks want fixed lengths). */
  ignore_eos: z.boolean().nullish(),
  n: z.number().int().nullish(),
  presence_penalty: z.number().nullish(),
  frequency_penalty: z.number().nullish(),
  logprobs: z.unknown().optional(),
  user: z.string().optional(),
  /** Not in OpenAI's API; moe-ts's: report in usage.moe_rare_experts how much of this request reached rarely trained experts. */
  moe_rare_experts: z.boolean('moe_rare_experts must be true or false').nullish(),
};

export const CompletionRequest = z.object({
  ...common,
  prompt: z.union([z.string(), z.array(z.number().int().min(0)).min(1, 'a token-id prompt needs at least one id')], {
    error: 'prompt must be a string or an array of token ids (a list of prompts is not supported: send one request per prompt)',
  }),
  echo: z.boolean().nullish(),
  best_of: z.number().int().nullish(),
});
export type CompletionRequest = z.infer<typeof CompletionRequest>;

const Message = z.object({
  role: z.enum(['system', 'user', 'assistant', 'developer', 'tool'], { error: 'role must be one of system, user, assistant, developer, tool' }),
  // text parts only: [{type: "text", text}] is joined
  content: z.union([z.string(), z.array(z.object({ type: z.literal('text', { error: 'only text content parts are supported' }), text: z.string() }))]),
});

export const ChatRequest = z.object({
  ...common,
  messages: z.array(Message).min(1, 'messages must hold at least one message'),
  max_completion_tokens: z.number().int('max_completion_tokens must be an integer').min(1, 'max_completion_tokens must be at least 1').nullish(),
});
export type ChatRequest = z.infer<typeof ChatRequest>;

/** An OpenAI error body; param names the offending field. */
export interface ErrorBody { error: { message: string; type: string; param: string | null; code: string | null } }

export class ProtocolError extends Error {
  constructor(readonly status: number, message: string, readonly param: string | null = null, readonly type = 'invalid_request_error', readonly code: string | null = null) {
    super(message);
  }
  body(): ErrorBody {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

/** Parses a body or throws a 400 that names the first bad field (e.g. "messages.0.role"). */
export function parseRequest<S extends z.ZodType>(schema: S, body: unknown): z.infer<S> {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) throw new ProtocolError(400, 'the request body must be a JSON object');
  const r = schema.safeParse(body);
  if (r.success) return r.data;
  const issue = r.error.issues[0]!;
  const param = issue.path.map(String).join('.') || null;
  throw new ProtocolError(400, `${param ?? 'body'}: ${issue.message}`, param);
}

/** Refuses the OpenAI features this server does not implement, naming the field (400), instead of ignoring them. */
export function checkSupported(req: CompletionRequest | ChatRequest): void {
  if (req.n !== undefined && req.n !== null && req.n !== 1) throw new ProtocolError(400, `n: only n = 1 is supported (got ${req.n}); send separate requests`, 'n');
  if (req.presence_penalty) throw new ProtocolError(400, 'presence_penalty: not supported (only 0)', 'presence_penalty');
  if (req.frequency_penalty) throw new ProtocolError(400, 'frequency_penalty: not supported (only 0)', 'frequency_penalty');
  if (req.logprobs !== undefined && req.logprobs !== null && req.logprobs !== false) throw new ProtocolError(400, 'logprobs: not supported', 'logprobs');
  if ('echo' in req && req.echo) throw new ProtocolError(400, 'echo: not supported', 'echo');
  if ('best_of' in req && req.best_of !== undefined && req.best_of !== null && req.best_of !== 1) throw new ProtocolError(400, 'best_of: only 1 is supported', 'best_of');
}

export function stopList(stop: string | string[] | null | undefined): string[] {
  if (stop === undefined || stop === null) return [];
  return typeof stop === 'string' ? [stop] : stop;
}

/** Message content as text (text parts joined). */
export function messageText(content: z.infer<typeof Message>['content']): string {
  return typeof content === 'string' ? content : content.map((p) => p.text).join('');
}

export type OpenAIFinish = 'stop' | 'length';
export interface Usage { prompt_tokens: number; completion_tokens: number; total_tokens: number }

export const usage = (prompt: number, completion: number): Usage => ({ prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion });

export function completionBody(id: string, created: number, model: string, text: string, finish: OpenAIFinish, u: Usage): object {
  return { id, object: 'text_completion', created, model, choices: [{ index: 0, text, logprobs: null, finish_reason: finish }], usage: u };
}

export function completionChunk(id: string, created: number, model: string, text: string, finish: OpenAIFinish | null): object {
  return { id, object: 'text_completion', created, model, choices: [{ index: 0, text, logprobs: null, finish_reason: finish }] };
}

export function chatBody(id: string, created: number, model: string, content: string, finish: OpenAIFinish, u: Usage): object {
  return { id, object: 'chat.completion', created, model, choices: [{ index: 0, message: { role: 'assistant', content }, logprobs: null, finish_reason: finish }], usage: u };
}

export function chatChunk(id: string, created: number, model: string, delta: { role?: 'assistant'; content?: string }, finish: OpenAIFinish | null): object {
  return { id, object: 'chat.completion.chunk', created, model, choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }] };
}

/** The last chunk of a stream with stream_options.include_usage: usage, no choices (as OpenAI sends it). */
export function usageChunk(kind: 'chat' | 'completions', id: string, created: number, model: string, u: Usage): object {
  return { id, object: kind === 'chat' ? 'chat.completion.chunk' : 'text_completion', created, model, choices: [], usage: u };
}

/** One server-sent event as OpenAI writes it. */
export const sse = (data: object | '[DONE]'): string => `data: ${data === '[DONE]' ? data : JSON.stringify(data)}\n\n`;
