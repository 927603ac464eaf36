// Drives both services over gRPC with Connect-node and prints what it saw as one JSON object.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import type { DescService } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type CallOptions, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { BadRequestSchema, ErrorInfoSchema } from "./gen/google/rpc/error_details_pb.js";
import { ReputationService } from "./gen/interview/reputation/v1/reputation_pb.js";
import { MessageRole, SessionService, SessionStatus } from "./gen/interview/sessions/v1/sessions_pb.js";

function env(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`environment variable ${name} is required`);
  return value;
}

function grpcClient<T extends DescService>(service: T, address: string): Client<T> {
  return createClient(service, createGrpcTransport({ baseUrl: `http://${address}` }));
}

function as(token: string): CallOptions {
  return { headers: { authorization: `Bearer ${token}` }, timeoutMs: 5000 };
}

function setup() {
  return {
    sessions: grpcClient(SessionService, env("SESSION_ADDRESS")),
    reputation: grpcClient(ReputationService, env("REPUTATION_ADDRESS")),
    owner: as(env("OWNER_TOKEN")),
    partner: as(env("PARTNER_TOKEN")),
    ownerId: env("OWNER_ID"),
    partnerId: env("PARTNER_ID"),
  };
}
type Setup = ReturnType<typeof setup>;

// The call must fail with `code`; returns the error's ErrorInfo and BadRequest details.
async function expectError(call: Promise<unknown>, code: Code) {
  try {
    await call;
  } catch (e) {
    const err = ConnectError.from(e);
    assert.equal(err.code, code, `expected gRPC code ${code}, got ${err.code}: ${err.message}`);
    const info = err.findDetails(ErrorInfoSchema)[0];
    const fields = err.findDetails(BadRequestSchema).flatMap((b) => b.fieldViolations.map((v) => v.field));
    return { code: err.code, reason: info?.reason, domain: info?.domain, fields };
  }
  throw new Error(`expected gRPC code ${code}, but the call succeeded`);
}

async function solo({ sessions, owner }: Setup) {
  const create = { jobPostingId: randomUUID(), requestId: randomUUID() };
  const created = await sessions.createSession(create, owner);
  const again = await sessions.createSession(create, owner);
  const sessionId = created.sessionId;

  const question = await sessions.appendMessage(
    { sessionId, role: MessageRole.QUESTION, content: "Tell me about a hard bug." },
    owner,
  );
  const answer = await sessions.appendMessage(
    { sessionId, role: MessageRole.ANSWER, content: "A race in a relay." },
    owner,
  );
  const paused = await sessions.pauseSession({ sessionId }, owner);
  const resumed = await sessions.resumeSession({ sessionId }, owner);
  const completed = await sessions.completeSession({ sessionId }, owner);
  const repeat = await expectError(sessions.completeSession({ sessionId }, owner), Code.FailedPrecondition);
  const { messages } = await sessions.listMessages({ sessionId, pageSize: 10 }, owner);
  const badId = await expectError(sessions.getSession({ sessionId: "not-a-uuid" }, owner), Code.InvalidArgument);

  const statuses = [created, paused, resumed, completed].map((s) => s.status);
  assert.deepEqual(statuses, [SessionStatus.ACTIVE, SessionStatus.PAUSED, SessionStatus.ACTIVE, SessionStatus.COMPLETED], "statuses after create, pause, resume, complete");
  assert.equal(again.sessionId, sessionId, "a repeated request_id must return the same session");
  assert.deepEqual([question.questionNumber, answer.questionNumber], [1, 1], "question numbers");
  assert.equal(messages.length, 2, "listed messages");
  assert.ok(completed.completeTime, "complete_time must be set");
  assert.equal(repeat.reason, "SESSION_ALREADY_COMPLETED", "ErrorInfo reason of a repeated complete");
  assert.ok(badId.fields.includes("session_id"), `BadRequest must name session_id, got ${badId.fields}`);

  return {
    session_id: sessionId,
    statuses,
    idempotent_create: again.sessionId === sessionId,
    question_numbers: [question.questionNumber, answer.questionNumber],
    messages: messages.length,
    complete_time_set: completed.completeTime !== undefined,
    repeat_complete: { code: repeat.code, reason: repeat.reason, domain: repeat.domain },
    bad_id: { code: badId.code, reason: badId.reason, fields: badId.fields },
  };
}

async function paired({ sessions, reputation, owner, partner, ownerId, partnerId }: Setup) {
  const { sessionId } = await sessions.createSession({ jobPostingId: randomUUID(), partnerUserId: partnerId }, owner);
  const first = await reputation.confirmCompletion({ sessionId }, owner);
  const second = await reputation.confirmCompletion({ sessionId, requestId: randomUUID() }, partner);
  const { score } = await reputation.getReputation({ userId: ownerId }, partner);

  assert.equal(first.bothConfirmed, false, "one confirmation must not be enough");
  assert.deepEqual(first.confirmedUserIds, [ownerId], "confirmed after the owner");
  assert.equal(second.bothConfirmed, true, "both must be confirmed after the partner");
  assert.equal(second.reputationAwarded, true, "reputation must be awarded");
  assert.equal(second.sessionStatus, SessionStatus.COMPLETED, "session status after both confirmed");
  assert.deepEqual(second.confirmedUserIds, [ownerId, partnerId].sort(), "confirmed after both");
  assert.ok(score >= 1n, `the owner's score must be at least 1, got ${score}`);

  return {
    session_id: sessionId,
    first: { both_confirmed: first.bothConfirmed, confirmed_user_ids: first.confirmedUserIds },
    second: {
      both_confirmed: second.bothConfirmed,
      reputation_awarded: second.reputationAwarded,
      session_status: second.sessionStatus,
      confirmed_user_ids: second.confirmedUserIds,
    },
    owner_score: score.toString(),
  };
}

try {
  const s = setup();
  console.log(JSON.stringify({ solo: await solo(s), paired: await paired(s) }));
} catch (e) {
  console.error(`interop check failed: ${e instanceof Error ? e.message : String(e)}`);
  process.exitCode = 1;
}
