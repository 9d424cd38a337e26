#!/usr/bin/env Rscript
# Run R `surveillance` detection calls on weekly series, for comparison with vigila
# (tests/test_detect_r_differential.py, benchmarks/r_differential.py).
#
#   Rscript benchmarks/r_differential.R SERIES.csv CALLS.tsv OUT.csv
#
# SERIES.csv: series_id,t,cases,week_start,start_year,start_week -- one row per week, t = 1..n. A series with
#   week_start becomes sts(epoch = as.Date(week_start), epochAsDate = TRUE, frequency = 52); one without,
#   sts(start = c(start_year, start_week), frequency = 52) (reference weeks by index).
# CALLS.tsv (no header): call_id <TAB> series_id <TAB> range <TAB> R expression using `x` (the series' sts)
#   and `range` (the weeks to evaluate, e.g. 425:528), e.g.
#     farringtonFlexible(x, control = list(range = range))
#     algo.farrington(sts2disProg(x), control = list(range = range, b = 5, w = 3))
# OUT.csv: call_id,series_id,t,upperbound,alarm,expected,error -- one row per evaluated week. A call that stops
#   with an error is run again week by week (range = k); a week where R still stops has R's error message.
#   Methods whose weeks depend on the earlier weeks of the range (earsC C3, algo.cusum) are exact only when
#   the whole call succeeds.
suppressPackageStartupMessages(library(surveillance))
args <- commandArgs(trailingOnly = TRUE)
if (length(args) != 3) stop("usage: r_differential.R SERIES.csv CALLS.tsv OUT.csv")
series <- read.csv(args[1], colClasses = c(series_id = "character", week_start = "character"))
calls <- read.delim(args[2], header = FALSE, col.names = c("call_id", "series_id", "range", "expr"),
                    colClasses = "character", quote = "")
by_id <- split(series, series$series_id)
make_sts <- function(s) {
  s <- s[order(s$t), ]
  if (!is.na(s$week_start[1]) && nzchar(s$week_start[1])) {
    sts(observed = matrix(s$cases, ncol = 1), epoch = as.Date(s$week_start), epochAsDate = TRUE, frequency = 52)
  } else {
    sts(observed = matrix(s$cases, ncol = 1), start = c(s$start_year[1], s$start_week[1]), frequency = 52)
  }
}
column <- function(v, n) if (is.null(v)) rep(NA_real_, n) else as.numeric(v)
cache <- list()
run_call <- function(call_id, sid, x, range, expr) {
  res <- tryCatch(suppressWarnings(eval(parse(text = expr))), error = function(e) e)
  if (inherits(res, "error")) {
    return(data.frame(call_id = call_id, series_id = sid, t = NA, upperbound = NA, alarm = NA, expected = NA,
                      error = gsub("[\r\n\"]+", " ", conditionMessage(res))))
  }
  if (is(res, "sts")) {           # earsC, farringtonFlexible: x[range, ]
    r <- range
    ub <- res@upperbound[, 1]; al <- res@alarm[, 1]; ex <- res@control$expected
  } else {                        # survRes of algo.farrington, algo.cusum
    r <- res$control$range
    ub <- as.vector(res$upperbound); al <- as.vector(res$alarm); ex <- NULL
  }
  stopifnot(length(ub) == length(r))
  data.frame(call_id = call_id, series_id = sid, t = r, upperbound = column(ub, length(r)),
             alarm = column(al, length(r)), expected = column(ex, length(r)), error = "")
}
rows <- vector("list", nrow(calls))
for (i in seq_len(nrow(calls))) {
  sid <- calls$series_id[i]
  if (is.null(cache[[sid]])) cache[[sid]] <- make_sts(by_id[[sid]])
  x <- cache[[sid]]
  range <- eval(parse(text = calls$range[i]))
  out <- run_call(calls$call_id[i], sid, x, range, calls$expr[i])
  if (is.na(out$t[1]) && length(range) > 1) {
    # R stops for the whole range (e.g. farringtonFlexible: a week without b years of history): ask again week
    # by week, so that each week is either R's result or the error R stops with there
    out <- do.call(rbind, lapply(range, function(k) {
      w <- run_call(calls$call_id[i], sid, x, k, calls$expr[i])
      w$t <- k
      w
    }))
  }
  rows[[i]] <- out
}
out <- do.call(rbind, rows)
write.csv(out, args[3], row.names = FALSE, na = "")
