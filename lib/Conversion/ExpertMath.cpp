//===- ExpertMath.cpp - Scalar math of routing and expert bodies ----------===//
//
// Part of the moe-mlir project.
//
//===----------------------------------------------------------------------===//

#include "moe/Conversion/ExpertMath.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Math/IR/Math.h"

#include <cmath>

using namespace mlir;
using namespace moe;

static Value constant(OpBuilder &b, Location loc, Type type, double v) {
  return arith::ConstantOp::create(b, loc, b.getFloatAttr(type, v));
}

Value moe::buildSigmoid(OpBuilder &b, Location loc, Value x) {
  Value one = constant(b, loc, x.getType(), 1.0);
  Value e = math::ExpOp::create(b, loc, arith::NegFOp::create(b, loc, x));
  return arith::DivFOp::create(b, loc, one,
                               arith::AddFOp::create(b, loc, one, e));
}

/// `act(x)` with the sigmoid scale `alpha` of a scaled SiLU.
static Value activate(OpBuilder &b, Location loc, Activation act, double alpha,
                      Value x) {
  auto c = [&](double v) { return constant(b, loc, x.getType(), v); };
  auto mul = [&](Value l, Value r) {
    return arith::MulFOp::create(b, loc, l, r).getResult();
  };
  auto add = [&](Value l, Value r) {
    return arith::AddFOp::create(b, loc, l, r).getResult();
  };
  switch (act) {
  case Activation::Silu:
    return mul(x, buildSigmoid(b, loc, alpha == 1.0 ? x : mul(x, c(alpha))));
  case Activation::Gelu: {
    Value erf = math::ErfOp::create(b, loc, mul(x, c(M_SQRT1_2)));
    return mul(mul(x, c(0.5)), add(c(1.0), erf));
  }
  case Activation::GeluTanh: {
    Value inner = add(x, mul(mul(mul(x, x), x), c(0.044715)));
    Value tanh =
        math::TanhOp::create(b, loc, mul(inner, c(std::sqrt(2.0 / M_PI))));
    return mul(mul(x, c(0.5)), add(c(1.0), tanh));
  }
  case Activation::Relu:
    return arith::MaximumFOp::create(b, loc, x, c(0.0));
  case Activation::Identity:
    return x;
  }
  llvm_unreachable("unknown activation");
}

Value moe::buildExpertHidden(OpBuilder &b, Location loc, ExpertAttr expert,
                             Value gate, Value up) {
  Activation act = expert.getActivation();
  double alpha = expert.getAlpha().convertToDouble();
  if (!expert.isGated())
    return activate(b, loc, act, alpha, up);
  Type type = up.getType();
  double limit = expert.getLimit().convertToDouble();
  if (limit > 0.0) {
    Value lim = constant(b, loc, type, limit);
    gate = arith::MinimumFOp::create(b, loc, gate, lim);
    up = arith::MaximumFOp::create(b, loc,
                                   arith::MinimumFOp::create(b, loc, up, lim),
                                   constant(b, loc, type, -limit));
  }
  double beta = expert.getBeta().convertToDouble();
  if (beta != 0.0)
    up = arith::AddFOp::create(b, loc, up, constant(b, loc, type, beta));
  return arith::MulFOp::create(b, loc, activate(b, loc, act, alpha, gate), up);
}

Value moe::buildExpertChoiceCapacity(OpBuilder &b, Location loc,
                                     RoutingAttr routing, int64_t numExperts,
                                     Value numTokens) {
  Type i64 = b.getI64Type();
  Value capacity;
  if (routing.getCapacity() > 0) {
    capacity = arith::ConstantOp::create(
        b, loc, b.getI64IntegerAttr(routing.getCapacity()));
  } else {
    Type f64 = b.getF64Type();
    Value tokens = arith::SIToFPOp::create(b, loc, f64, numTokens);
    Value c = arith::MulFOp::create(
        b, loc,
        arith::ConstantOp::create(
            b, loc,
            b.getF64FloatAttr(routing.getCapacityFactor().convertToDouble() /
                              double(numExperts))),
        tokens);
    c = arith::MinimumFOp::create(b, loc, math::CeilOp::create(b, loc, c),
                                  tokens);
    capacity = arith::FPToSIOp::create(b, loc, i64, c);
  }
  return arith::MinSIOp::create(b, loc, capacity, numTokens);
}

Value moe::buildHashExpert(OpBuilder &b, Location loc, Value id,
                           int64_t numExperts) {
  Type i64 = b.getI64Type();
  auto i64Const = [&](int64_t v) -> Value {
    return arith::ConstantOp::create(b, loc, b.getI64IntegerAttr(v));
  };
  Value h =
      arith::MulIOp::create(b, loc, arith::IndexCastOp::create(b, loc, i64, id),
                            i64Const(2654435761));
  h = arith::AndIOp::create(b, loc, h, i64Const(0xFFFFFFFF));
  h = arith::RemUIOp::create(b, loc, h, i64Const(numExperts));
  return arith::IndexCastOp::create(b, loc, b.getIndexType(), h);
}
