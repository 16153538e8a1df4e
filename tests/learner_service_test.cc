// The learner service (learner/learner_service.h) and its client (learner/grpc_policy_learner.h) against the
// in-process policy learner: the same GRPO step (every loss option that travels: TIS, KL against a reference,
// per-row KL coefficients, the auxiliary loss's share) from the same weights gives the same statistics, the same
// log-probs and bit-identical weights; optimizer state and weights round-trip. The wire forms refuse what does not
// check out (a blob over its announced size or bound, a CRC mismatch, token ids outside the vocabulary, rows outside
// the batch) and the service keeps serving after a refused call; another architecture, or a missing token, is
// refused at connect.
#include <filesystem>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "learner/grpc_policy_learner.h"
#include "learner/learner_service.h"
#include "learner/learner_wire.h"
#include "learner/policy_learner.h"
#include "model/model_factory.h"
#include "tests/learner_fixtures.h"
#include "tests/test_util.h"

namespace spargo::learner {
namespace {

struct Remote {
  std::unique_ptr<LearnerServer> server;
  std::unique_ptr<PolicyLearner> client;
};

Remote StartRemote(uint64_t seed, const config::ServiceEndpoints& endpoints = {}) {
  Remote r;
  auto local = NewLocalPolicyLearner(TinyModel(seed), PolicyLearnerOptions());
  EXPECT_TRUE(local.ok()) << local.status();
  LearnerServerOptions o;
  o.address = "127.0.0.1:0";
  o.endpoints = endpoints;
  o.chunk_bytes = 1000;  // many chunks per blob
  auto server = LearnerServer::Start(std::move(*local), o);
  EXPECT_TRUE(server.ok()) << server.status();
  r.server = std::move(*server);
  GrpcPolicyLearnerOptions c;
  c.address = "127.0.0.1:" + std::to_string(r.server->port());
  c.endpoints = endpoints;
  c.chunk_bytes = 777;
  auto client = NewGrpcPolicyLearner(c, Parameters(*TinyModel(seed)));
  EXPECT_TRUE(client.ok()) << client.status();
  if (client.ok()) r.client = std::move(*client);
  return r;
}

void ExpectSameTerms(const TrainStepResult& a, const TrainStepResult& b) {
  EXPECT_EQ(a.grad_norm, b.grad_norm);
  EXPECT_EQ(a.loss, b.loss);
  EXPECT_EQ(a.aux_loss, b.aux_loss);
  EXPECT_EQ(a.terms.tokens, b.terms.tokens);
  EXPECT_EQ(a.terms.policy_loss, b.terms.policy_loss);
  EXPECT_EQ(a.terms.kl_sum, b.terms.kl_sum);
  EXPECT_EQ(a.terms.ratio_sum, b.terms.ratio_sum);
  EXPECT_EQ(a.terms.clip_low_count + a.terms.clip_high_count, b.terms.clip_low_count + b.terms.clip_high_count);
  EXPECT_EQ(a.terms.masked_sequences, b.terms.masked_sequences);
  EXPECT_EQ(a.terms.tis_clipped_count, b.terms.tis_clipped_count);
  EXPECT_EQ(a.terms.entropy_sum, b.terms.entropy_sum);
}

TEST(LearnerService, TakesTheInProcessLearnersSteps) {
  const SequenceBatch batch = FixtureBatch();
  const LossSpec loss = FixtureGrpoSpec(batch);
  config::OptimizerConfig oc;
  oc.set_lr(1e-2);
  ForwardOptions f;
  f.with_entropy = true;
  f.vocab_limit = 32;
  auto local = NewLocalPolicyLearner(TinyModel(5), PolicyLearnerOptions());
  ASSERT_TRUE(local.ok());
  Remote remote = StartRemote(5);
  ASSERT_NE(remote.client, nullptr);
  EXPECT_EQ(remote.client->model(), nullptr);
  EXPECT_EQ(remote.client->max_seq_len(), 16);
  EXPECT_THAT(remote.client->Describe(), ::testing::HasSubstr("learner service at 127.0.0.1:"));
  for (PolicyLearner* p : {local->get(), remote.client.get()}) ASSERT_TRUE(p->ResetOptimizer(oc).ok());
  const auto micro = SplitRows({0, 1, 2, 3}, 3);
  for (int step = 0; step < 2; ++step) {
    auto a = (*local)->TrainStep(batch, micro, f, loss, oc, oc.lr());
    auto b = remote.client->TrainStep(batch, micro, f, loss, oc, oc.lr());
    ASSERT_TRUE(a.ok()) << a.status();
    ASSERT_TRUE(b.ok()) << b.status();
    EXPECT_GT(a->grad_norm, 0);
    EXPECT_GT(a->terms.tokens, 0);
    ExpectSameTerms(*a, *b);
  }
  // A mini-batch of some rows: only those rows travel, and the step is the same.
  for (const std::vector<std::vector<int64_t>>& some : {std::vector<std::vector<int64_t>>{{3}, {1}},
                                                        std::vector<std::vector<int64_t>>{{2, 0}}}) {
    LossSpec part = loss;
    part.rows_total = 2;
    auto a = (*local)->TrainStep(batch, some, f, part, oc, oc.lr());
    auto b = remote.client->TrainStep(batch, some, f, part, oc, oc.lr());
    ASSERT_TRUE(a.ok() && b.ok()) << b.status();
    ExpectSameTerms(*a, *b);
  }
  auto la = (*local)->LogProbs(batch, micro, f);
  auto lb = remote.client->LogProbs(batch, micro, f);
  ASSERT_TRUE(la.ok() && lb.ok()) << lb.status();
  EXPECT_TRUE(torch::equal(*la, *lb));
  auto wa = (*local)->MasterWeights();
  auto wb = remote.client->MasterWeights();
  auto mb = remote.client->ModelWeights();
  ASSERT_TRUE(wa.ok() && wb.ok() && mb.ok()) << wb.status();
  ASSERT_EQ(wa->size(), wb->size());
  for (const auto& [name, t] : *wa) {
    EXPECT_TRUE(torch::equal(t, wb->at(name))) << name;
    EXPECT_TRUE(torch::equal(t, mb->at(name))) << name;
  }

  // Optimizer state and weights moved to a fresh service continue identically.
  Remote other = StartRemote(6);
  ASSERT_NE(other.client, nullptr);
  ASSERT_TRUE(other.client->LoadWeights(*wb).ok());
  ASSERT_TRUE(other.client->ResetOptimizer(oc).ok());
  auto state = remote.client->OptimizerState();
  ASSERT_TRUE(state.ok()) << state.status();
  ASSERT_TRUE(other.client->LoadOptimizerState(*state).ok());
  auto a = (*local)->TrainStep(batch, micro, f, loss, oc, oc.lr());
  auto b = other.client->TrainStep(batch, micro, f, loss, oc, oc.lr());
  ASSERT_TRUE(a.ok() && b.ok()) << b.status();
  ExpectSameTerms(*a, *b);
  EXPECT_EQ(other.client->LoadOptimizerState("not an archive").code(), absl::StatusCode::kInternal);
}

TEST(LearnerService, RefusesBadStepsAndKeepsServing) {
  Remote remote = StartRemote(7);
  ASSERT_NE(remote.client, nullptr);
  config::OptimizerConfig oc;
  ASSERT_TRUE(remote.client->ResetOptimizer(oc).ok());
  SequenceBatch batch = FixtureBatch();
  const auto micro = SplitRows({0, 1, 2, 3}, 0);
  LossSpec loss = FixtureGrpoSpec(batch);
  // A token id outside the model's vocabulary: refused before the model runs.
  SequenceBatch bad = batch;
  bad.input_ids = batch.input_ids.clone();
  bad.input_ids[1][1] = kFixtureVocab + 3;
  auto r = remote.client->TrainStep(bad, micro, ForwardOptions(), loss, oc, 1e-3);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), ::testing::HasSubstr("batch.input_ids"));
  // A micro-batch naming a row the batch does not have.
  r = remote.client->TrainStep(batch, {{0, 9}}, ForwardOptions(), loss, oc, 1e-3);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), ::testing::HasSubstr("micro_batches[0] names row 9"));
  // Weights of another shape.
  model::TensorMap wrong = *remote.client->MasterWeights();
  wrong.begin()->second = torch::zeros({3});
  EXPECT_FALSE(remote.client->LoadWeights(wrong).ok());
  // Still serving, with the weights it had.
  auto ok = remote.client->TrainStep(batch, micro, ForwardOptions(), loss, oc, 1e-3);
  EXPECT_TRUE(ok.ok()) << ok.status();
}

TEST(LearnerService, RefusesAnotherArchitectureAndCallsWithoutTheToken) {
  auto local = NewLocalPolicyLearner(TinyModel(8), PolicyLearnerOptions());
  ASSERT_TRUE(local.ok());
  const std::string dir = testing::NewTempDir("learner-token");
  testing::WriteFile(dir + "/token", "s3cret\n");
  config::ServiceEndpoints with_token;
  with_token.set_token_file(dir + "/token");
  LearnerServerOptions o;
  o.address = "127.0.0.1:0";
  o.endpoints = with_token;
  auto server = LearnerServer::Start(std::move(*local), o);
  ASSERT_TRUE(server.ok()) << server.status();
  GrpcPolicyLearnerOptions c;
  c.address = "127.0.0.1:" + std::to_string((*server)->port());
  c.connect_seconds = 5;
  auto no_token = NewGrpcPolicyLearner(c, Parameters(*TinyModel(8)));
  EXPECT_EQ(no_token.status().code(), absl::StatusCode::kUnauthenticated) << no_token.status();
  c.endpoints = with_token;
  auto wider = NewGrpcPolicyLearner(c, Parameters(*TinyModel(8, /*hidden=*/24)));
  EXPECT_EQ(wider.status().code(), absl::StatusCode::kFailedPrecondition) << wider.status();
  EXPECT_THAT(wider.status().message(), ::testing::HasSubstr("another architecture"));
  auto same = NewGrpcPolicyLearner(c, Parameters(*TinyModel(8)));
  EXPECT_TRUE(same.ok()) << same.status();
  // Nothing listens: UNAVAILABLE after the connect wait, naming the address.
  GrpcPolicyLearnerOptions gone;
  gone.address = "127.0.0.1:" + std::to_string(testing::FreeLoopbackPort());
  gone.connect_seconds = 1;
  gone.endpoints.set_deadline_seconds(0.5);
  auto unavailable = NewGrpcPolicyLearner(gone, Parameters(*TinyModel(8)));
  EXPECT_EQ(unavailable.status().code(), absl::StatusCode::kUnavailable) << unavailable.status();
  EXPECT_THAT(unavailable.status().message(), ::testing::HasSubstr(gone.address));
}

TEST(LearnerWire, BlobsArriveWholeOrNotAtAll) {
  std::string blob(10000, '\0');
  for (size_t i = 0; i < blob.size(); ++i) blob[i] = static_cast<char>(i * 7);
  std::vector<BlobChunk> chunks;
  ASSERT_TRUE(SendBlob(blob, 3000, [&](const BlobChunk& c) {
    chunks.push_back(c);
    return true;
  }));
  ASSERT_EQ(chunks.size(), 4u);
  BlobAssembler whole(1 << 20, "test");
  for (const auto& c : chunks) ASSERT_TRUE(whole.Add(c).ok());
  EXPECT_EQ(*whole.Take(), blob);
  // One flipped byte: DATA_LOSS at the end.
  BlobAssembler flipped(1 << 20, "test");
  std::vector<BlobChunk> bad = chunks;
  (*bad[1].mutable_data())[5] ^= 1;
  absl::Status s;
  for (const auto& c : bad) s.Update(flipped.Add(c));
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  // More than the bound: refused at the first chunk, before anything is buffered.
  BlobAssembler small(5000, "test");
  EXPECT_EQ(small.Add(chunks[0]).code(), absl::StatusCode::kResourceExhausted);
  // More bytes than announced.
  BlobChunk liar = chunks[0];
  liar.set_total_bytes(10);
  BlobAssembler lied(1 << 20, "test");
  EXPECT_EQ(lied.Add(liar).code(), absl::StatusCode::kInvalidArgument);
  // No last chunk: nothing to take.
  BlobAssembler cut(1 << 20, "test");
  ASSERT_TRUE(cut.Add(chunks[0]).ok());
  EXPECT_EQ(cut.Take().status().code(), absl::StatusCode::kFailedPrecondition);
  // An empty blob is one chunk.
  std::vector<BlobChunk> empty;
  SendBlob("", 100, [&](const BlobChunk& c) {
    empty.push_back(c);
    return true;
  });
  ASSERT_EQ(empty.size(), 1u);
  BlobAssembler e(10, "test");
  ASSERT_TRUE(e.Add(empty[0]).ok());
  EXPECT_EQ(*e.Take(), "");
}

TEST(LearnerWire, AStepCutToItsRowsKeepsTheirValues) {
  SequenceBatch batch = FixtureBatch();
  batch.replay.assign(4, {});
  batch.replay[3]["layers.0.topk"] = torch::tensor({{2, 1}}, torch::kLong);
  const LossSpec loss = FixtureGrpoSpec(batch);
  const StepRows cut = OnlyRowsInUse(batch, {{3}, {1, 3}}, &loss);
  EXPECT_EQ(cut.micro_batches, (std::vector<std::vector<int64_t>>{{1}, {0, 1}}));
  const torch::Tensor rows = torch::tensor({1, 3}, torch::kLong);
  EXPECT_TRUE(torch::equal(cut.batch.input_ids, batch.input_ids.index_select(0, rows)));
  EXPECT_TRUE(torch::equal(cut.batch.kept_ids, batch.kept_ids.index_select(0, rows)));
  EXPECT_TRUE(torch::equal(cut.batch.lengths, torch::tensor({6, 4}, torch::kLong)));
  EXPECT_TRUE(torch::equal(cut.loss.advantages, torch::tensor({-0.5f, -0.75f})));
  EXPECT_TRUE(torch::equal(cut.loss.ref_logp, loss.ref_logp.index_select(0, rows)));
  ASSERT_EQ(cut.batch.replay.size(), 2u);
  EXPECT_TRUE(cut.batch.replay[0].empty());
  EXPECT_TRUE(torch::equal(cut.batch.replay[1].at("layers.0.topk"), batch.replay[3].at("layers.0.topk")));
}

TEST(LearnerWire, StepsRoundTripAndBadOnesNameTheField) {
  SequenceBatch batch = FixtureBatch();
  batch.replay.assign(4, {});
  batch.replay[2]["layers.0.topk"] = torch::tensor({{0, 1}, {1, 2}}, torch::kLong);
  const LossSpec loss = FixtureGrpoSpec(batch);
  config::OptimizerConfig oc;
  oc.set_max_grad_norm(0.5);
  ForwardOptions f;
  f.temperature = 0.7;
  f.keep_sampling_mask = false;
  StepHeader h;
  std::string blob;
  ASSERT_TRUE(EncodeStep(batch, {{0, 1}, {2, 3}}, f, &loss, &oc, 3e-4, &h, &blob).ok());
  auto s = DecodeStep(h, blob, true, kFixtureVocab);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_TRUE(torch::equal(s->batch.input_ids, batch.input_ids));
  EXPECT_TRUE(torch::equal(s->batch.kept_ids, batch.kept_ids));
  EXPECT_TRUE(torch::equal(s->batch.replay[2].at("layers.0.topk"), batch.replay[2].at("layers.0.topk")));
  EXPECT_TRUE(s->batch.replay[0].empty());
  EXPECT_TRUE(torch::equal(s->loss.advantages, loss.advantages));
  EXPECT_TRUE(torch::equal(s->loss.kl_coef_rows, loss.kl_coef_rows));
  EXPECT_EQ(s->loss.grpo.off_policy_delta, loss.grpo.off_policy_delta);
  EXPECT_EQ(s->loss.grpo.tis_cap, 2.0);
  EXPECT_EQ(s->micro_batches, (std::vector<std::vector<int64_t>>{{0, 1}, {2, 3}}));
  EXPECT_EQ(s->forward.temperature, 0.7);
  EXPECT_FALSE(s->forward.keep_sampling_mask);
  EXPECT_EQ(s->optimizer.max_grad_norm(), 0.5);
  EXPECT_EQ(s->lr, 3e-4);
  EXPECT_EQ(s->batch.completion_tokens, batch.completion_tokens);

  // The vocabulary of a smaller model: input ids and kept ids outside it.
  EXPECT_THAT(DecodeStep(h, blob, true, 15).status().message(), ::testing::HasSubstr("batch.input_ids"));
  StepHeader bad = h;
  bad.mutable_forward()->set_temperature(0);
  EXPECT_THAT(DecodeStep(bad, blob, true, kFixtureVocab).status().message(), ::testing::HasSubstr("forward.temperature"));
  bad = h;
  bad.mutable_loss()->set_normaliser(0);
  EXPECT_THAT(DecodeStep(bad, blob, true, kFixtureVocab).status().message(), ::testing::HasSubstr("normaliser"));
  bad = h;
  bad.mutable_micro_batches(1)->set_rows(0, 99);
  EXPECT_THAT(DecodeStep(bad, blob, true, kFixtureVocab).status().message(),
              ::testing::HasSubstr("micro_batches[1] names row 99 of a batch of 4"));
  bad = h;
  bad.mutable_loss()->mutable_grpo()->set_kl_estimator(17);
  EXPECT_EQ(DecodeStep(bad, blob, true, kFixtureVocab).status().code(), absl::StatusCode::kInvalidArgument);
  // Loss tensors of the wrong shape.
  LossSpec short_adv = loss;
  short_adv.advantages = torch::ones({3});
  ASSERT_TRUE(EncodeStep(batch, {{0, 1}}, f, &short_adv, &oc, 1e-3, &h, &blob).ok());
  EXPECT_THAT(DecodeStep(h, blob, true, kFixtureVocab).status().message(), ::testing::HasSubstr("advantages"));
  // Bytes that are not safetensors.
  EXPECT_EQ(DecodeStep(h, "garbage", true, kFixtureVocab).status().code(), absl::StatusCode::kDataLoss);
}

}  // namespace
}  // namespace spargo::learner
